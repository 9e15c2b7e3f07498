"""`POST /v1/moderations` and `POST /v1/chat/moderations`: la Plateforme's moderation API, answered by a
catalogue model (docs/moderation.md)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import cast

from fastapi import APIRouter

from galerne.api.deps import PrincipalDep, Runtime, RuntimeDep
from galerne.api.errors import error_responses
from galerne.inference.types import ChatMessage, Role
from galerne.inference.validate import normalise_messages
from galerne.moderation_categories import Category
from galerne.protocol import chat as chat_wire
from galerne.protocol.moderations import (
    ChatModerationRequest,
    ModerationRequest,
    ModerationResponse,
    ModerationResult,
)
from galerne.services.auth import Principal

router = APIRouter(responses=error_responses(400, 401, 404, 413, 422, 429, 500, 503))
# A category is reported `true` from this score on (la Plateforme gives no threshold; policies set their own).
REPORTED_FROM = 0.5


@router.post("/v1/moderations", response_model=ModerationResponse)
async def moderations(body: ModerationRequest, principal: PrincipalDep, runtime: RuntimeDep) -> ModerationResponse:
    """Classify one text or a list of texts, each on its own."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    conversations = [[ChatMessage(Role.USER, text)] for text in texts]
    return await _moderate(runtime, body.model, conversations, principal)


@router.post("/v1/chat/moderations", response_model=ModerationResponse)
async def chat_moderations(
    body: ChatModerationRequest, principal: PrincipalDep, runtime: RuntimeDep
) -> ModerationResponse:
    """Classify the last message of a conversation (or of each of a list of them), read in its context."""
    is_list = bool(body.input) and isinstance(body.input[0], list)
    raw = cast(Sequence[Sequence[chat_wire.Message]], body.input if is_list else [body.input])
    model_id = body.model or ""
    conversations = [normalise_messages(list(messages), model_id=model_id) for messages in raw]
    return await _moderate(runtime, body.model, conversations, principal)


async def _moderate(
    runtime: Runtime, model: str | None, conversations: list[list[ChatMessage]], principal: Principal
) -> ModerationResponse:
    model_id, results = await runtime.moderations.moderate(model, conversations, principal)
    return ModerationResponse(
        id=uuid.uuid4().hex,
        model=model_id,
        results=[
            ModerationResult(
                categories={c.value: result.scores[c] >= REPORTED_FROM for c in Category},
                category_scores={c.value: round(result.scores[c], 6) for c in Category},
            )
            for result in results
        ],
    )
