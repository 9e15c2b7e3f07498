"""The strict base every request schema inherits: unknown fields are refused, as on la Plateforme."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Request-side model: an unknown field is an error ("Extra inputs are not permitted")."""

    model_config = ConfigDict(extra="forbid")


class WireModel(BaseModel):
    """Response-side model: serialised as is, fields in declaration order."""

    model_config = ConfigDict(extra="forbid")
