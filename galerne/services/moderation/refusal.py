"""The reply a `refuse` policy writes instead of the model, as a generation the chat service reads like any."""

from __future__ import annotations

from collections.abc import AsyncIterator

from galerne.inference.types import FinishReason, GenerationEvent


class RefusalGeneration:
    """The reply a `refuse` policy writes instead of the model: nothing is decoded, no slot is taken."""

    def __init__(self, text: str) -> None:
        self.prompt_tokens = 0
        self._text = text

    @property
    def cached_tokens(self) -> int:
        return 0

    async def events(self) -> AsyncIterator[GenerationEvent]:
        yield GenerationEvent(self._text, 0, 0)
        yield GenerationEvent("", 0, 0, FinishReason.CONTENT_FILTER)

    def cancel(self) -> None:
        return None
