"""`GET /v1/models` and `GET /v1/models/{id}`: the catalogue as la Plateforme's model cards.

A key sees only the models its project may use, as on la Plateforme."""

from __future__ import annotations

from fastapi import APIRouter

from galerne.api.deps import PrincipalDep, RuntimeDep
from galerne.api.errors import error_responses
from galerne.protocol.models import ModelCard, ModelList

router = APIRouter(responses=error_responses(401, 404, 503))


@router.get("/v1/models", response_model=ModelList)
async def list_models(principal: PrincipalDep, runtime: RuntimeDep) -> ModelList:
    cards = runtime.registry.cards()
    return ModelList(data=[card for card in cards.data if principal.may_use(card.id)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, principal: PrincipalDep, runtime: RuntimeDep) -> ModelCard:
    """A model the key's project may not use is answered as an unknown one (404), so none can be enumerated."""
    return runtime.registry.card(runtime.registry.catalog.resolve(model_id, is_visible=principal.may_use))
