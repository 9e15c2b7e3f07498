"""What every engine offers the services: prepare a validated request, submit it, stream its events.

Engines are small plugins; the services never ask which one they hold. `prepare` does the engine's
checks and says how many tokens the request may use (prompt + the most each choice may generate), so
the services can reserve that against a project's limits before any work starts; `submit` then queues
it and returns one `Generation` per choice. `prepare` is a coroutine because its work (tokenizing a long
prompt, compiling a grammar) must not run on the event loop: each engine decides where it runs.
An engine raises from `prepare` or `submit` (before anything is streamed) when a request cannot run:
too long for the context (400), queue full (429); after that, problems arrive as a final event with
`finish_reason == ERROR`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from galerne.inference.types import GenerationEvent, GenerationRequest


@dataclass(frozen=True, slots=True)
class EngineCapabilities:
    """What an engine can do. Log-probabilities, raw text prompts and fill-in-the-middle need the model's own
    logits and vocabulary, so only an engine that runs the model offers them."""

    supports_chat: bool = True
    supports_tools: bool = False
    supports_json: bool = False
    supports_logprobs: bool = False
    supports_text_completion: bool = False
    supports_fim: bool = False
    supports_embeddings: bool = False


@dataclass(frozen=True, slots=True)
class EngineStats:
    num_queued: int
    num_active: int
    num_slots: int
    is_healthy: bool  # False: it cannot take requests now (its loop died or it is stopping); /health says 503


class Generation(Protocol):
    """A submitted request. Iterate it for events; `cancel` frees its slot at the engine's next step."""

    prompt_tokens: int

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens whose KV was reused from an earlier request (known once events flow)."""
        ...

    def events(self) -> AsyncIterator[GenerationEvent]: ...

    def cancel(self) -> None: ...


class PreparedRequest(Protocol):
    """A request the engine has checked and can run as is; opaque to the services beyond its budget."""

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the prompt (an estimate for engines that cannot tokenize locally)."""
        ...

    @property
    def max_new_tokens(self) -> int:
        """The most tokens each choice's reply may take: `max_tokens`, or what is left of the context."""
        ...

    @property
    def num_choices(self) -> int:
        """How many replies `submit` will start (the request's `n`)."""
        ...


class Engine(Protocol):
    capabilities: EngineCapabilities
    context_length: int

    async def prepare(self, request: GenerationRequest) -> PreparedRequest: ...

    def submit(self, prepared: PreparedRequest) -> Sequence[Generation]: ...

    def stats(self) -> EngineStats: ...

    async def probe(self) -> bool:
        """Whether it can serve now, asked of the engine itself (a remote engine calls its upstream): how a
        deployment taken out of rotation after failures comes back."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Embeddings:
    """What an embedding engine returns for a list of inputs, in their order."""

    vectors: npt.NDArray[np.float32]  # (num_inputs, dimensions), each row of L2 norm 1
    num_tokens: int  # tokens all inputs were read as (after truncation; a remote engine's upstream counts them)


class PreparedEmbedding(Protocol):
    """Inputs an embedding engine has checked and can run as they are."""

    @property
    def num_tokens(self) -> int:
        """Tokens of all inputs together (what the project's limits reserve)."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """An engine that can count an input's tokens without running it (documents size their passages by it)."""

    def count_tokens(self, text: str) -> int: ...


@runtime_checkable
class EmbeddingEngine(Protocol):
    """An engine that turns texts into vectors. `prepare` tokenizes off the event loop and refuses (400) an input
    longer than the model reads unless `truncate` says to cut it, as sentence-transformers does; `embed` queues
    the inputs (429 when the queue is full) and waits for their vectors, which concurrent requests share
    encoder passes for."""

    # The model's vector size; None when an upstream decides (a remote engine passes `dimensions` on to it).
    dimensions: int | None
    max_input_tokens: int  # the model's window per input, special tokens included

    async def prepare_embedding(
        self, texts: Sequence[str], *, truncate: bool, dimensions: int | None = None
    ) -> PreparedEmbedding: ...

    async def embed(self, prepared: PreparedEmbedding) -> Embeddings: ...
