"""The moderation API's service: classify texts and conversations, each on the nine categories.

A call is admitted once (the model must be visible to the key's project, and the project within its limits);
its classifier runs are metered to the project. PII found by the deterministic detectors scores 1.

Example::

    model, results = await moderations.moderate("smollm2", [[ChatMessage(Role.USER, "My IBAN is ...")]], principal)
    results[0].scores[Category.PII]   # 1.0
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from galerne.errors import InvalidRequestError
from galerne.inference.types import ChatMessage
from galerne.services.auth import Principal
from galerne.services.chat import ChatService
from galerne.services.moderation.classifier import CategoryScores, ModerationClassifier, with_detected_pii

MAX_INPUTS = 32
# Inputs of one call classified at once: each is a prompt plus ten scored answers, so a few fill the engine.
_IN_FLIGHT = 4


class ModerationService:
    def __init__(self, chat: ChatService, classifier: ModerationClassifier) -> None:
        self._chat = chat
        self._classifier = classifier

    async def moderate(
        self, model: str | None, conversations: Sequence[Sequence[ChatMessage]], principal: Principal
    ) -> tuple[str, list[CategoryScores]]:
        """The model that classified, and one result per conversation (its last message, in context)."""
        if not conversations:
            raise InvalidRequestError("`input` is empty; send at least one text", param="input")
        if len(conversations) > MAX_INPUTS:
            raise InvalidRequestError(
                f"{len(conversations)} inputs in one call; send at most {MAX_INPUTS}", param="input"
            )
        entry = await self._chat.admit_early(model or self._classifier.default_model, principal)
        gate = asyncio.Semaphore(_IN_FLIGHT)

        async def one(conversation: Sequence[ChatMessage]) -> CategoryScores:
            async with gate:
                scores = await self._classifier.classify(conversation, principal, model=entry.id)
            return with_detected_pii(scores, conversation[-1].content)

        return entry.id, list(await asyncio.gather(*(one(conversation) for conversation in conversations)))
