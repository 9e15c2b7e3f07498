"""`GET /health`'s body: the replica's status, each part's, and (for a valid key) its models' load."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from galerne.protocol.base import WireModel

PartStatus = Literal["ok", "down"]


class ModelHealth(WireModel):
    status: PartStatus
    queued: int = Field(description="Requests waiting for a slot.")
    active: int = Field(description="Requests being generated.")
    slots: int = Field(description="Requests the model runs at once.")


class HealthStatus(WireModel):
    status: Literal["ok", "unavailable"] = Field(description="`unavailable` (HTTP 503) when any part is down.")
    database: PartStatus
    limit_store: PartStatus = Field(description="Where rate limits are counted (Redis, or this process).")
    engines: PartStatus = Field(description="`down` when any model's engine cannot take requests.")
    down: list[str] = Field(default_factory=list, description="The parts that are down.")
    models: dict[str, ModelHealth] | None = Field(
        default=None, description="Per model, only with a valid key, and only the models that key may use."
    )
