"""Model cards as `GET /v1/models` returns them (la Plateforme's `BaseModelCard` fields)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from galerne.protocol.base import WireModel


class ModelCapabilities(WireModel):
    completion_chat: bool = True
    completion_fim: bool = False
    function_calling: bool = False
    fine_tuning: bool = False
    vision: bool = False
    classification: bool = False
    moderation: bool = False
    ocr: bool = False
    audio: bool = False
    json_output: bool = False
    embeddings: bool = False


class ModelHealth(WireModel):
    """Galerne's addition to the card: whether the model can serve now. `degraded`: some of its deployments
    are out of rotation after failures, the others serve; `down`: none can (requests get 503)."""

    status: Literal["healthy", "degraded", "down"]
    num_deployments: int
    num_healthy: int


class ModelCard(WireModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    capabilities: ModelCapabilities
    name: str
    description: str
    max_context_length: int
    aliases: list[str] = Field(default_factory=list)
    deprecation: str | None = None
    default_model_temperature: float | None = None
    type: Literal["base"] = "base"
    languages: list[str] = Field(default_factory=list)
    pricing: dict[str, float] = Field(default_factory=dict)
    health: ModelHealth | None = None


class ModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
