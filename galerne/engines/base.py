"""What every engine offers the services: submit a validated request, stream its events, cancel it.

Engines are small plugins; the services never ask which one they hold. An engine raises from
`submit` (before anything is streamed) when a request cannot run: too long for the context (400),
queue full (429); after that, problems arrive as a final event with `finish_reason == ERROR`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from galerne.inference.types import GenerationEvent, GenerationRequest


@dataclass(frozen=True, slots=True)
class EngineCapabilities:
    supports_chat: bool = True
    supports_tools: bool = False
    supports_json: bool = False


@dataclass(frozen=True, slots=True)
class EngineStats:
    num_queued: int
    num_active: int
    num_slots: int


class Generation(Protocol):
    """A submitted request. Iterate it for events; `cancel` frees its slot at the engine's next step."""

    prompt_tokens: int

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens whose KV was reused from an earlier request (known once events flow)."""
        ...

    def events(self) -> AsyncIterator[GenerationEvent]: ...

    def cancel(self) -> None: ...


class Engine(Protocol):
    capabilities: EngineCapabilities
    context_length: int

    def submit(self, request: GenerationRequest) -> Generation: ...

    def stats(self) -> EngineStats: ...

    def close(self) -> None: ...
