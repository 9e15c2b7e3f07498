"""Chat completions: resolve the model, validate, run `n` generations, assemble the reply or the stream.

`start` does everything that can fail with a 4xx before any byte is sent, so a streamed request that
cannot run is refused with a proper status, not with an error inside a 200 stream.

Example::

    run = await chat.start(ChatCompletionRequest(model="smollm2", messages=[...]), principal)
    response = await chat.complete(run)          # or: async for chunk in await chat.stream(run)

Every accepted run is settled exactly once — usage recorded, unused rate-limit tokens refunded —
when it finishes, fails, or its client leaves; `abandon` covers a run whose reply never started.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace

from galerne.catalog import Capability, ModelEntry
from galerne.engines.base import EngineCapabilities, Generation
from galerne.errors import GenerationFailedError, RateLimitExceededError, UnsupportedFeatureError
from galerne.inference.constraints import JsonOutput, OutputConstraint, ToolCallOutput
from galerne.inference.types import ChatMessage, FinishReason, GenerationEvent, GenerationRequest, Role, ToolCall
from galerne.inference.validate import DEFAULT_TEMPERATURE, to_generation_request
from galerne.protocol import chat as wire
from galerne.services.admission import Admission, Ticket
from galerne.services.auth import Principal
from galerne.services.metering import UsageStatus
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry


@dataclass
class _ChoiceProgress:
    """Timing and counts of one choice, for metrics and usage."""

    started: float
    first_text_at: float | None = None
    last_text_at: float | None = None
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    text: list[str] = field(default_factory=list)


@dataclass
class ChatRun:
    """A chat request accepted by an engine: `n` generations sharing one id and one prompt."""

    id: str
    created: int
    model: str
    prefix: str
    generations: list[Generation]
    ticket: Ticket
    progress: list[_ChoiceProgress] = field(default_factory=list)
    constraint: OutputConstraint | None = None
    is_recorded: bool = False

    @property
    def limit_headers(self) -> dict[str, str]:
        """la Plateforme's `x-ratelimit-*` headers as they stood when this run was admitted."""
        return self.ticket.limit_headers

    def ttft_seconds(self) -> float | None:
        firsts = [p.first_text_at - p.started for p in self.progress if p.first_text_at is not None]
        return min(firsts) if firsts else None

    @property
    def prompt_tokens(self) -> int:
        return self.generations[0].prompt_tokens

    def usage(self) -> wire.Usage:
        completion = sum(choice.completion_tokens for choice in self.progress)
        cached = self.generations[0].cached_tokens
        return wire.Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion,
            total_tokens=self.prompt_tokens + completion,
            num_cached_tokens=cached,
            prompt_tokens_details=wire.PromptTokensDetails(cached_tokens=cached),
        )


class ChatService:
    def __init__(self, registry: ModelRegistry, metrics: Metrics, admission: Admission) -> None:
        self._registry = registry
        self._metrics = metrics
        self._admission = admission

    async def start(self, request: wire.ChatCompletionRequest, principal: Principal) -> ChatRun:
        """Validate, admit and submit; raises 4xx errors (unknown or hidden model, bad conversation,
        too long, over a limit or budget, busy) before anything is generated."""
        entry = self._registry.catalog.resolve(request.model, is_visible=principal.may_use)
        try:
            # Cheap refusals first: a project over its limits must not get to tokenize a 7 MB prompt.
            await self._admission.precheck(principal)
        except RateLimitExceededError as exc:
            self._metrics.refused.labels(entry.id, exc.code or "").inc()
            raise
        default_temperature = entry.default_temperature
        # Off the loop too: checking a large JSON schema is CPU work every other stream would wait for.
        generation_request = await asyncio.to_thread(
            to_generation_request,
            request,
            model_id=entry.id,
            default_temperature=DEFAULT_TEMPERATURE if default_temperature is None else default_temperature,
        )
        engine = self._registry.engine_for(entry)
        _check_capabilities(entry, engine.capabilities, generation_request.constraint)
        generation_request = _with_system_prompt(generation_request, entry.system_prompt)
        prepared = await engine.prepare(generation_request)
        # The prompt is shared by the n choices in usage, as la Plateforme counts it.
        reserved = prepared.prompt_tokens + prepared.num_choices * prepared.max_new_tokens
        try:
            ticket = await self._admission.admit(principal, entry, reserved)
        except RateLimitExceededError as exc:
            self._metrics.refused.labels(entry.id, exc.code or "").inc()
            raise
        try:
            generations = list(engine.submit(prepared))
        except BaseException:
            self._admission.release_unused(ticket)
            raise
        now = time.monotonic()
        prefix = generation_request.assistant_prefix or ""
        return ChatRun(
            id=uuid.uuid4().hex,
            created=int(time.time()),
            model=entry.id,
            prefix=prefix,
            generations=generations,
            ticket=ticket,
            progress=[_ChoiceProgress(started=now, text=[prefix]) for _ in generations],
            constraint=generation_request.constraint,
        )

    async def complete(self, run: ChatRun) -> wire.ChatCompletionResponse:
        """Wait for every choice and return the whole reply."""
        status = "cancelled"
        try:
            async for index, event in _merge(run.generations):
                self._observe(run, index, event)
            status = self._final_status(run)
        except Exception:
            status = "error"
            raise
        finally:
            self._record(run, status)
        choices = []
        for index, progress in enumerate(run.progress):
            message, finish_reason = _reply(progress)
            choices.append(wire.Choice(index=index, message=message, finish_reason=finish_reason))
        return wire.ChatCompletionResponse(
            id=run.id, created=run.created, model=run.model, choices=choices, usage=run.usage()
        )

    async def stream(self, run: ChatRun) -> AsyncIterator[wire.ChatCompletionChunk]:
        """Wait for the engine's first event, then return the chunks in la Plateforme's shape: role first,
        text deltas, then finish_reason and usage last.

        Waiting first means a generation that fails at once (an upstream's 4xx, 502 or 504) raises here,
        before any byte is sent, and so is answered with its own status rather than inside a 200 stream.
        """
        events = _merge(run.generations)
        try:
            first = await anext(events, None)
            if first is not None:
                self._observe(run, *first)
        except BaseException as exc:
            await events.aclose()
            self._record(run, "error" if isinstance(exc, Exception) else "cancelled")
            raise
        return self._chunks(run, first, events)

    async def _chunks(
        self,
        run: ChatRun,
        first: tuple[int, GenerationEvent] | None,
        events: AsyncIterator[tuple[int, GenerationEvent]],
    ) -> AsyncIterator[wire.ChatCompletionChunk]:
        status = "cancelled"
        try:
            for index in range(len(run.generations)):
                yield self._chunk(run, index, wire.Delta(role="assistant", content=run.prefix))
            if first is not None:
                if chunk := self._text_chunk(run, *first):
                    yield chunk
                async for index, event in events:
                    self._observe(run, index, event)
                    if chunk := self._text_chunk(run, index, event):
                        yield chunk
            status = self._final_status(run)
            self._record(run, status)  # durable before the final chunks and [DONE] go out
            last = len(run.generations) - 1
            for index, progress in enumerate(run.progress):
                message, reason = _reply(progress)
                if message.tool_calls:
                    yield self._chunk(run, index, wire.Delta(tool_calls=message.tool_calls))
                usage = run.usage() if index == last else None
                yield self._chunk(run, index, wire.Delta(), finish_reason=reason, usage=usage)
        except Exception:
            status = "error"
            raise
        finally:
            self._record(run, status)

    def _text_chunk(self, run: ChatRun, index: int, event: GenerationEvent) -> wire.ChatCompletionChunk | None:
        """The chunk for an observed event's text; none for text of a tool call (calls are sent whole at the end)."""
        if event.text and not event.is_tool_call:
            return self._chunk(run, index, wire.Delta(content=event.text))
        return None

    def _chunk(
        self,
        run: ChatRun,
        index: int,
        delta: wire.Delta,
        *,
        finish_reason: wire.FinishReason | None = None,
        usage: wire.Usage | None = None,
    ) -> wire.ChatCompletionChunk:
        return wire.ChatCompletionChunk(
            id=run.id,
            created=run.created,
            model=run.model,
            choices=[wire.ChunkChoice(index=index, delta=delta, finish_reason=finish_reason)],
            usage=usage,
        )

    def _observe(self, run: ChatRun, index: int, event: GenerationEvent) -> None:
        progress = run.progress[index]
        progress.completion_tokens = event.completion_tokens
        if event.text:
            if not event.is_tool_call:  # a call's text is never reply text: it arrives typed, at the end
                progress.text.append(event.text)
            now = time.monotonic()
            if progress.last_text_at is None:
                progress.first_text_at = now
                self._metrics.time_to_first_token.labels(run.model).observe(now - progress.started)
            else:
                self._metrics.inter_token_latency.labels(run.model).observe(now - progress.last_text_at)
            progress.last_text_at = now
        if event.finish_reason is not None:
            progress.finish_reason = event.finish_reason
            progress.tool_calls = event.tool_calls
            if event.is_closed_early:
                self._metrics.closed_early.labels(run.model).inc()
            if event.finish_reason is FinishReason.ERROR:
                if event.is_invalid_output:
                    self._metrics.invalid_outputs.labels(run.model).inc()
                    raise GenerationFailedError(event.error or "the reply broke its constraint", code="invalid_output")
                raise event.failure or GenerationFailedError(event.error or "the model failed while generating; retry")

    def _final_status(self, run: ChatRun) -> str:
        return "ok" if all(p.finish_reason is not None for p in run.progress) else "cancelled"

    def abandon(self, run: ChatRun) -> None:
        """Settle a run whose reply was cut off before `complete` or `stream` could (client gone early)."""
        self._record(run, "cancelled")

    def _record(self, run: ChatRun, status: str) -> None:
        """Count and meter the request once, whatever way it ended (finished, failed, or the client left)."""
        if run.is_recorded:
            return
        run.is_recorded = True
        if status != "ok":  # stop whatever still runs: the client left, or one choice failed
            for generation in run.generations:
                generation.cancel()
        usage = run.usage()
        self._admission.settle(
            run.ticket,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            ttft_seconds=run.ttft_seconds(),
            status=UsageStatus(status),
        )
        self._metrics.requests.labels(run.model, status).inc()
        self._metrics.prompt_tokens.labels(run.model).inc(usage.prompt_tokens)
        self._metrics.completion_tokens.labels(run.model).inc(usage.completion_tokens)
        self._metrics.cached_prompt_tokens.labels(run.model).inc(usage.num_cached_tokens)
        self._metrics.request_duration.labels(run.model).observe(time.monotonic() - run.progress[0].started)


async def _merge(generations: list[Generation]) -> AsyncGenerator[tuple[int, GenerationEvent], None]:
    """Events of all choices as they come; one choice is iterated directly (the common, fast case)."""
    if len(generations) == 1:
        async for event in generations[0].events():
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, GenerationEvent | Exception | None]] = asyncio.Queue()

    async def pump(index: int, generation: Generation) -> None:
        try:
            async for event in generation.events():
                await queue.put((index, event))
            await queue.put((index, None))
        except Exception as exc:  # handed to the consumer, so one choice's failure is not lost in its task
            await queue.put((index, exc))

    tasks = [asyncio.create_task(pump(index, g)) for index, g in enumerate(generations)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _check_capabilities(
    entry: ModelEntry, engine: EngineCapabilities, constraint: OutputConstraint | None
) -> None:
    """A feature needs both the catalogue (operator's choice) and the engine (what it can enforce);
    a request for one that is missing is refused, not ignored."""
    offers_tools = Capability.TOOLS in entry.capabilities and engine.supports_tools
    offers_json = Capability.JSON in entry.capabilities and engine.supports_json
    if isinstance(constraint, ToolCallOutput) and not offers_tools:
        raise UnsupportedFeatureError(f"model {entry.id!r} does not offer function calling", param="tools")
    if isinstance(constraint, JsonOutput) and not offers_json:
        raise UnsupportedFeatureError(f"model {entry.id!r} does not offer JSON output", param="response_format")


def _reply(progress: _ChoiceProgress) -> tuple[wire.ResponseMessage, wire.FinishReason | None]:
    """The assistant message for a finished choice: its typed tool calls, or its text."""
    if progress.tool_calls:
        tool_calls = [
            wire.ResponseToolCall(id=call.id, function={"name": call.name, "arguments": call.arguments}, index=i)
            for i, call in enumerate(progress.tool_calls)
        ]
        return wire.ResponseMessage(content="", tool_calls=tool_calls), _wire_finish(progress.finish_reason)
    return wire.ResponseMessage(content="".join(progress.text)), _wire_finish(progress.finish_reason)


def _with_system_prompt(request: GenerationRequest, system_prompt: str | None) -> GenerationRequest:
    if not system_prompt or any(message.role is Role.SYSTEM for message in request.messages):
        return request
    messages = (ChatMessage(role=Role.SYSTEM, content=system_prompt), *request.messages)
    return replace(request, messages=messages)


def _wire_finish(reason: FinishReason | None) -> wire.FinishReason | None:
    if reason is FinishReason.STOP:
        return "stop"
    if reason is FinishReason.LENGTH:
        return "length"
    if reason is FinishReason.TOOL_CALLS:
        return "tool_calls"
    if reason is FinishReason.ERROR:
        return "error"
    return None
