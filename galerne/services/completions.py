"""Text completion (`/v1/completions`) and log-likelihood scoring, on the models' own logits.

Both run through `ChatService.launch`, the one door to the engines: the same admission, rate limits,
budgets, usage records and metrics as chat. Scoring is the in-process API of the evaluation runner:

Example::

    scores = await completions.score("smollm2", "The capital of France is", [" Paris", " Rome"], principal)
    best = max(range(len(scores)), key=lambda i: scores[i].logprob)

Each continuation is scored as lm-eval-harness does (its `loglikelihood` request): the context and the
continuation are tokenised together, split at the context's own token boundary, and the continuation's
tokens' log-probabilities (natural log, raw model distribution) are summed. The continuations of one call
share the context's KV in the engine: it is computed once, then copied. Metered as prompt tokens only:
the context once, plus every continuation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from galerne.errors import InvalidRequestError, UnsupportedFeatureError
from galerne.inference.completions import completion_request
from galerne.inference.types import (
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    LogprobOptions,
    SamplingParams,
    TextPrompt,
    TokenLogprob,
)
from galerne.inference.validate import DEFAULT_TEMPERATURE
from galerne.protocol import completions as wire
from galerne.services.auth import Principal
from galerne.services.chat import ChatRun, ChatService, check_logprobs
from galerne.services.logprobs import LegacyLogprobs

# One call scores at most this many continuations (each takes a slot of the engine while it runs).
MAX_CONTINUATIONS = 32


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float  # sum of log P(continuation tokens | context), natural log
    num_tokens: int  # tokens of the continuation
    is_greedy: bool  # every continuation token was the argmax


@dataclass
class CompletionRun:
    """A text completion accepted by an engine: the chat run underneath, and what the reply must show."""

    run: ChatRun
    prompt: str
    is_echo: bool
    num_top: int | None  # None: no `logprobs` asked for
    offsets: list[LegacyLogprobs] = field(default_factory=list)  # one per choice, for streamed offsets

    @property
    def limit_headers(self) -> dict[str, str]:
        return self.run.limit_headers


class CompletionService:
    def __init__(self, chat: ChatService) -> None:
        self._chat = chat

    async def start(self, request: wire.CompletionRequest, principal: Principal) -> CompletionRun:
        """Validate, admit and submit; 4xx errors are raised before anything is generated."""
        entry = await self._chat.admit_early(request.model, principal)
        default = entry.default_temperature
        generation_request = completion_request(
            request, default_temperature=DEFAULT_TEMPERATURE if default is None else default
        )
        capabilities = self._chat.engine_capabilities(entry)
        if not capabilities.supports_text_completion:
            raise UnsupportedFeatureError(
                f"model {entry.id!r} offers chat completions only (it is served by a remote engine); "
                "use /v1/chat/completions",
                param="model",
            )
        if request.suffix is not None and not capabilities.supports_fim:
            raise UnsupportedFeatureError(
                f"model {entry.id!r} cannot fill in the middle (`suffix`): its vocabulary has no prefix, suffix "
                "and middle tokens",
                param="suffix",
            )
        check_logprobs(entry, capabilities, generation_request)
        run = await self._chat.launch(entry, generation_request, principal)
        run.id = f"cmpl-{run.id}"
        prompt = request.prompt if isinstance(request.prompt, str) else request.prompt[0]
        num_top = request.logprobs
        offsets = [LegacyLogprobs(num_top or 0) for _ in run.generations]
        return CompletionRun(run, prompt, request.echo, num_top, offsets)

    async def complete(self, completion: CompletionRun) -> wire.CompletionResponse:
        """Wait for every choice and return the whole reply."""
        run = completion.run
        await self._chat.finish(run)
        choices = []
        for index, progress in enumerate(run.progress):
            text = "".join(progress.text)
            logprobs = None
            if completion.num_top is not None:
                tokens = list(progress.logprobs)
                if completion.is_echo:
                    tokens = [*(run.progress[0].prompt_logprobs or ()), *tokens]
                logprobs = completion.offsets[index].add(tokens)
            if completion.is_echo:
                text = completion.prompt + text
            choices.append(
                wire.CompletionChoice(
                    text=text, index=index, logprobs=logprobs, finish_reason=_finish(progress.finish_reason)
                )
            )
        return wire.CompletionResponse(
            id=run.id, created=run.created, model=run.model, choices=choices, usage=run.usage()
        )

    async def stream(self, completion: CompletionRun) -> AsyncIterator[wire.CompletionResponse]:
        """Wait for the engine's first event (a failure then keeps its own status), then return the chunks:
        text deltas per choice (with their log-probabilities), each choice's finish_reason, usage last."""
        first, events = await self._chat.first_event(completion.run)
        return self._chunks(completion, first, events)

    async def _chunks(
        self,
        completion: CompletionRun,
        first: tuple[int, GenerationEvent] | None,
        events: AsyncIterator[tuple[int, GenerationEvent]],
    ) -> AsyncIterator[wire.CompletionResponse]:
        run = completion.run
        status = "cancelled"
        try:
            if completion.is_echo:
                for index in range(len(run.generations)):
                    prompt_tokens = () if first is None else run.progress[0].prompt_logprobs or ()
                    yield self._chunk(completion, index, completion.prompt, prompt_tokens)
            if first is not None:
                if chunk := self._event_chunk(completion, *first):
                    yield chunk
                async for index, event in events:
                    if chunk := self._event_chunk(completion, index, event):
                        yield chunk
            status = self._chat.final_status(run)
            self._chat.settle(run, status)  # durable before the final chunks go out
            for index, progress in enumerate(run.progress):
                chunk = self._chunk(completion, index, "", ())
                chunk.choices[0].logprobs = None
                chunk.choices[0].finish_reason = _finish(progress.finish_reason)
                yield chunk
            yield wire.CompletionResponse(
                id=run.id, created=run.created, model=run.model, choices=[], usage=run.usage()
            )
        except Exception:
            status = "error"
            raise
        finally:
            self._chat.settle(run, status)

    def _event_chunk(
        self, completion: CompletionRun, index: int, event: GenerationEvent
    ) -> wire.CompletionResponse | None:
        if not event.text and not (completion.num_top is not None and event.logprobs):
            return None
        return self._chunk(completion, index, event.text, event.logprobs)

    def _chunk(
        self, completion: CompletionRun, index: int, text: str, tokens: Sequence[TokenLogprob]
    ) -> wire.CompletionResponse:
        run = completion.run
        logprobs = completion.offsets[index].add(tokens) if completion.num_top is not None else None
        choice = wire.CompletionChoice(text=text, index=index, logprobs=logprobs, finish_reason=None)
        return wire.CompletionResponse(id=run.id, created=run.created, model=run.model, choices=[choice])

    def abandon(self, completion: CompletionRun) -> None:
        """Settle a run whose reply was cut off before it was read to its end (client gone early)."""
        self._chat.abandon(completion.run)

    async def score(
        self, model: str, context: str, continuations: Sequence[str], principal: Principal
    ) -> list[ContinuationScore]:
        """log P(continuation | context) for each continuation, as lm-eval-harness's `loglikelihood`.

        Raises 4xx errors as the API does (unknown model, limits, a context too long); a remote model,
        which has no logits to read, is refused with 400. An empty context is scored after the model's
        BOS (or end-of-text) token, as lm-eval does.
        """
        if not continuations:
            return []
        if len(continuations) > MAX_CONTINUATIONS:
            raise InvalidRequestError(
                f"{len(continuations)} continuations in one call; score at most {MAX_CONTINUATIONS} at a time",
                param="continuations",
            )
        entry = await self._chat.admit_early(model, principal)
        request = GenerationRequest(
            messages=(),
            sampling=SamplingParams(temperature=0.0, max_tokens=0),
            is_streamed=False,
            num_choices=len(continuations),
            prompt=TextPrompt(context, tuple(continuations)),
            logprobs=LogprobOptions(num_top=0, of_completion=False, of_prompt=True),
        )
        check_logprobs(entry, self._chat.engine_capabilities(entry), request)
        run = await self._chat.launch(entry, request, principal)
        await self._chat.finish(run)
        return [_score(progress.prompt_logprobs or ()) for progress in run.progress]


def _score(tokens: Sequence[TokenLogprob]) -> ContinuationScore:
    scored = [token for token in tokens if token.logprob is not None]
    return ContinuationScore(
        logprob=sum(token.logprob for token in scored if token.logprob is not None),
        num_tokens=len(scored),
        is_greedy=all(token.is_argmax for token in scored),
    )


def _finish(reason: FinishReason | None) -> wire.FinishReason | None:
    if reason is FinishReason.STOP:
        return "stop"
    if reason is FinishReason.LENGTH:
        return "length"
    if reason is FinishReason.ERROR:
        return "error"
    return None
