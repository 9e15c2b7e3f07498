"""Wire schemas of the admin API that are not the services' own models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from galerne.protocol.base import StrictModel, WireModel


class KeyCreateRequest(StrictModel):
    project: str | None = Field(default=None, description="Project name; admin keys default to `admin`.")
    name: str = Field(default="", max_length=64)
    is_admin: bool = False
    expires_at: datetime | None = None


class UsageReport(WireModel):
    object: str = "list"
    group_by: list[str]
    data: list[dict[str, Any]]
