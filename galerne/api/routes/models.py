"""`GET /v1/models` and `GET /v1/models/{id}`: the catalogue as la Plateforme's model cards."""

from __future__ import annotations

from fastapi import APIRouter

from galerne.api.deps import RuntimeDep
from galerne.protocol.models import ModelCard, ModelList
from galerne.services.models import model_card

router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
async def list_models(runtime: RuntimeDep) -> ModelList:
    return runtime.registry.cards()


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, runtime: RuntimeDep) -> ModelCard:
    return model_card(runtime.registry.catalog.resolve(model_id))
