"""The error body la Plateforme documents: ``{"object":"error","message","type","param","code"}``."""

from __future__ import annotations

from typing import Literal

from galerne.protocol.base import WireModel


class ErrorBody(WireModel):
    object: Literal["error"] = "error"
    message: str
    type: str
    param: str | None = None
    code: str | None = None
