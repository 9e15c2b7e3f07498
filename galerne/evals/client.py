"""The evaluator's view of a model: score continuations, or generate — through the services the API uses.

`ServiceClient` calls `ChatService` (and the completion service's `score` for log-likelihoods) in-process
under a project's principal, so an evaluation is admitted, limited and metered like any other traffic, and
works for every engine the catalogue serves. Refusals that pass (a rate limit, a full queue) are waited out
and retried; other errors reach the runner, which records or reports them per item.

Example::

    client = ServiceClient(chat, principal, "smollm2", scorer=completions)
    scores = await client.score("Question: 2+2?\\nAnswer:", [" 3", " 4"])
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from galerne.errors import EngineOverloadedError, RateLimitExceededError, ServiceUnavailableError
from galerne.evals.prompts import ChatPrompt
from galerne.protocol.chat import ChatCompletionRequest
from galerne.services.auth import Principal
from galerne.services.chat import ChatService

MAX_RETRIES = 10
_T = TypeVar("_T")


class ScoredContinuation(Protocol):
    """What `CompletionService.score` returns per continuation (`galerne.services.completions`)."""

    @property
    def logprob(self) -> float: ...

    @property
    def num_tokens(self) -> int: ...

    @property
    def is_greedy(self) -> bool: ...


class ContinuationScorer(Protocol):
    async def score(
        self, model: str, context: str, continuations: Sequence[str], principal: Principal
    ) -> Sequence[ScoredContinuation]: ...


class ServiceClient:
    def __init__(
        self, chat: ChatService, principal: Principal, model: str, *, scorer: ContinuationScorer | None = None,
        can_constrain: bool = True,
    ) -> None:
        self._chat = chat
        self._principal = principal
        self._scorer = scorer
        self.model = model
        self.can_constrain = can_constrain  # the model offers `response_format` json_schema

    @property
    def can_score(self) -> bool:
        return self._scorer is not None

    @property
    def chat(self) -> ChatService:
        """The chat service it runs on, for other in-process work on the same model (moderation scoring)."""
        return self._chat

    @property
    def principal(self) -> Principal:
        return self._principal

    async def score(self, context: str, continuations: Sequence[str]) -> list[ScoredContinuation]:
        """log P(continuation | context) for each continuation."""
        scorer = self._scorer
        if scorer is None:
            raise RuntimeError("no continuation scorer for this model")  # the runner checks `can_score` first
        return list(await _retrying(lambda: scorer.score(self.model, context, continuations, self._principal)))

    async def generate(
        self, prompt: ChatPrompt, *, max_tokens: int, seed: int, response_format: dict[str, Any] | None = None
    ) -> str:
        """The reply's text, decoded greedily (seeded, for engines that sample anyway)."""
        body: dict[str, Any] = {
            "model": self.model, "messages": prompt.wire_messages(), "temperature": 0.0, "max_tokens": max_tokens,
            "seed": seed,
        }
        if prompt.stop:
            body["stop"] = list(prompt.stop)
        if response_format is not None:
            body["response_format"] = response_format
        request = ChatCompletionRequest.model_validate(body)

        async def once() -> str:
            run = await self._chat.start(request, self._principal)
            response = await self._chat.complete(run)
            return str(response.choices[0].message.content or "")

        return await _retrying(once)


async def _retrying(call: Callable[[], Awaitable[_T]]) -> _T:
    """Wait out refusals that say when to come back (rate limits, a full engine queue, a part briefly down)."""
    for attempt in range(MAX_RETRIES):
        try:
            return await call()
        except (RateLimitExceededError, EngineOverloadedError, ServiceUnavailableError) as exc:
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is None or attempt == MAX_RETRIES - 1:
                raise
            await asyncio.sleep(min(float(retry_after), 30.0))
    raise AssertionError("unreachable")
