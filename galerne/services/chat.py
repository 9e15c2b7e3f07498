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
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from galerne.catalog import Capability, ModelEntry
from galerne.engines.base import EngineCapabilities, Generation, PreparedRequest
from galerne.errors import (
    ContentPolicyError,
    ContextLengthExceededError,
    GenerationFailedError,
    RateLimitExceededError,
    UnsupportedFeatureError,
)
from galerne.inference.completions import fim_request
from galerne.inference.constraints import JsonOutput, OutputConstraint, ToolCallOutput
from galerne.inference.types import (
    ChatMessage,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    Role,
    TokenLogprob,
    ToolCall,
)
from galerne.inference.validate import DEFAULT_TEMPERATURE, to_generation_request
from galerne.protocol import chat as wire
from galerne.protocol import completions as completions_wire
from galerne.services.admission import Admission, Ticket
from galerne.services.auth import Principal
from galerne.services.logprobs import chat_logprobs
from galerne.services.metering import UsageStatus
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry
from galerne.services.moderation.refusal import RefusalGeneration
from galerne.services.moderation.sentences import SentenceHold

if TYPE_CHECKING:  # the guard runs its classifier through this service: it is handed over after both exist
    from galerne.services.grounding import DocumentGrounding
    from galerne.services.moderation.guard import OutputScreen, PolicyGuard, Verdict

# Budgets tried in turn for a request's documents: the chat model's tokenizer may need more than estimated.
GROUNDING_SHRINKS = (1.0, 0.6, 0.35)


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
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None


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
    wants_logprobs: bool = False
    screen: OutputScreen | None = None  # the moderation policies that screen this run's reply
    input_verdict: Verdict | None = None  # what they found in its input (flags, masks)
    references: list[wire.DocumentReference] | None = None  # the passages of the documents it was given

    def moderation(self) -> str | None:
        """What moderation policies did to this run, for its usage record (None: nothing)."""
        verdicts = [v for v in (self.input_verdict, self.screen.verdict if self.screen else None) if v is not None]
        described = ";".join(filter(None, (verdict.describe() for verdict in verdicts)))
        return described or None

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
        self.guard: PolicyGuard | None = None  # moderation policies (set at start-up; see services/moderation)
        self.grounding: DocumentGrounding | None = None  # documents in chat calls (set when an embedder is served)

    async def start(
        self, request: wire.ChatCompletionRequest, principal: Principal, *, is_chat_app: bool = False
    ) -> ChatRun:
        """Validate, apply moderation policies to the input, admit and submit; raises 4xx errors (unknown or
        hidden model, bad conversation, too long, blocked by a policy, over a limit or budget, busy) before
        anything is generated. `is_chat_app` adds Le Chat's policy to the model's and the project's."""
        entry = await self.admit_early(request.model, principal)
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
        check_logprobs(entry, engine.capabilities, generation_request)
        generation_request = _with_system_prompt(generation_request, entry.system_prompt)
        references = None
        prepared = None
        if generation_request.documents:
            generation_request, prepared, references = await self._ground(entry, generation_request, principal)
        run = await self._screen_and_launch(
            entry, generation_request, principal, is_chat_app=is_chat_app, prepared=prepared
        )
        run.references = references
        return run

    async def _screen_and_launch(
        self,
        entry: ModelEntry,
        generation_request: GenerationRequest,
        principal: Principal,
        *,
        is_chat_app: bool,
        prepared: PreparedRequest | None,
    ) -> ChatRun:
        """`prepared` is the engine's preparation of `generation_request` when grounding made one; it is
        dropped when a policy rewrites the request (a system prompt added, PII masked)."""
        guard = self.guard
        policies = guard.policies_for(entry, principal, is_chat_app=is_chat_app) if guard is not None else ()
        if guard is None or not policies:
            return await self.launch(entry, generation_request, principal, prepared=prepared)
        outcome = await guard.screen_input(generation_request, policies, principal, entry.id)
        if outcome.refusal is not None:
            run = await self._refusal_run(entry, generation_request, principal, outcome.refusal)
        else:
            is_unchanged = outcome.request is generation_request
            run = await self.launch(entry, outcome.request, principal, prepared=prepared if is_unchanged else None)
            run.screen = guard.output_screen(policies, principal, entry.id, outcome.request.messages)
        run.input_verdict = outcome.verdict
        return run

    async def _ground(
        self, entry: ModelEntry, generation_request: GenerationRequest, principal: Principal
    ) -> tuple[GenerationRequest, PreparedRequest, list[wire.DocumentReference]]:
        """Put the request's documents in its prompt (see services/grounding); a prompt that still overflows
        the context with them is rebuilt with a smaller budget. The preparation that proved it fits is
        returned, so a long grounded prompt is rendered and tokenized once."""
        grounding = self.grounding
        if grounding is None:
            raise UnsupportedFeatureError(
                "this server has no embedding model for documents; add one to the catalogue (docs/documents.md)",
                param="messages",
            )
        engine = self._registry.engine_for(entry)
        for shrink in GROUNDING_SHRINKS:
            grounded = await grounding.ground(generation_request, principal, entry, shrink=shrink)
            await grounding.release(grounded)  # inline documents: their text is in the prompt now
            try:
                prepared = await engine.prepare(grounded.request)
            except ContextLengthExceededError:
                if shrink == GROUNDING_SHRINKS[-1]:
                    raise
                continue
            references = [wire.DocumentReference(**asdict(reference)) for reference in grounded.references]
            return grounded.request, prepared, references
        raise AssertionError("unreachable: the last shrink raises")

    async def _refusal_run(
        self, entry: ModelEntry, request: GenerationRequest, principal: Principal, refusal: str
    ) -> ChatRun:
        """A run answered by a policy's refusal instead of the model: admitted and metered like any request
        (it is one), with no tokens and no engine."""
        ticket = await self._admission.admit(principal, entry, 0)
        generations: list[Generation] = [RefusalGeneration(refusal) for _ in range(request.num_choices)]
        now = time.monotonic()
        return ChatRun(
            id=uuid.uuid4().hex,
            created=int(time.time()),
            model=entry.id,
            prefix="",
            generations=generations,
            ticket=ticket,
            progress=[_ChoiceProgress(started=now) for _ in generations],
        )

    async def start_fim(self, request: completions_wire.FimCompletionRequest, principal: Principal) -> ChatRun:
        """Fill in the middle (la Plateforme's `/v1/fim/completions`); the reply has the chat shape.

        Refused with 400 on a model whose vocabulary has no prefix/suffix/middle tokens."""
        entry = await self.admit_early(request.model, principal)
        engine = self._registry.engine_for(entry)
        if not engine.capabilities.supports_fim:
            raise UnsupportedFeatureError(
                f"model {entry.id!r} cannot fill in the middle: its vocabulary has no prefix, suffix and middle "
                "tokens (FIM); use a code model that has them (GET /v1/models shows `completion_fim`)",
                param="model",
            )
        default = entry.default_temperature
        temperature = DEFAULT_TEMPERATURE if default is None else default
        generation_request = fim_request(request, default_temperature=temperature)
        return await self.launch(entry, generation_request, principal)

    async def admit_early(self, model: str, principal: Principal) -> ModelEntry:
        """Resolve the model and refuse (429/503) what is bound to be refused, before any expensive work:
        a project over its limits must not get to tokenize a 7 MB prompt."""
        entry = self._registry.catalog.resolve(model, is_visible=principal.may_use)
        if entry.is_embedding_only:
            raise UnsupportedFeatureError(
                f"model {entry.id!r} is an embedding model: it offers `embeddings` only (POST /v1/embeddings), not "
                "chat, text completion, fill-in-the-middle or moderation; use a chat model (GET /v1/models shows "
                "`completion_chat`)",
                param="model",
            )
        try:
            await self._admission.precheck(principal)
        except RateLimitExceededError as exc:
            self._metrics.refused.labels(entry.id, exc.code or "").inc()
            self._admission.count_refusal(principal, exc)
            raise
        return entry

    def registry_entry(self, model: str) -> ModelEntry:
        """A catalogue model by id or alias, with no admission: for work the platform does on behalf of a
        request that was admitted already (policy screening)."""
        return self._registry.catalog.resolve(model)

    def engine_capabilities(self, entry: ModelEntry) -> EngineCapabilities:
        return self._registry.engine_for(entry).capabilities

    async def launch(
        self,
        entry: ModelEntry,
        generation_request: GenerationRequest,
        principal: Principal,
        *,
        prepared: PreparedRequest | None = None,
    ) -> ChatRun:
        """Prepare on the engine (unless `prepared`, the engine's preparation of this very request, is
        given), reserve the request's tokens against its project's limits, and submit.

        The one door to an engine for every use case (chat, FIM, text completion, scoring), so all of them
        are admitted, limited and metered alike; settle the run with `settle` (or `complete`/`stream`)."""
        engine = self._registry.engine_for(entry)
        if prepared is None:
            prepared = await engine.prepare(generation_request)
        # The prompt is shared by the n choices in usage, as la Plateforme counts it.
        reserved = prepared.prompt_tokens + prepared.num_choices * prepared.max_new_tokens
        try:
            ticket = await self._admission.admit(principal, entry, reserved)
        except RateLimitExceededError as exc:
            self._metrics.refused.labels(entry.id, exc.code or "").inc()
            self._admission.count_refusal(principal, exc)
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
            wants_logprobs=generation_request.logprobs is not None,
        )

    async def events(self, run: ChatRun) -> AsyncGenerator[tuple[int, GenerationEvent], None]:
        """The run's events as (choice, event), each observed (metrics, progress); raises on a failed choice."""
        merged = _merge(run.generations)
        try:
            async for index, event in merged:
                self.observe(run, index, event)
                yield index, event
        finally:
            await merged.aclose()

    async def finish(self, run: ChatRun) -> None:
        """Run every choice to its end, observed, and settle the run (its usage record) however that ends."""
        status = "cancelled"
        try:
            async for index, event in _merge(run.generations):
                self.observe(run, index, event)
            status = self.final_status(run)
            if run.screen is not None:
                await _screen_replies(run, run.screen)
        except ContentPolicyError:
            raise  # answered, then blocked: the tokens were spent, the usage record says so
        except Exception:
            status = "error"
            raise
        finally:
            self.settle(run, status)

    async def complete(self, run: ChatRun) -> wire.ChatCompletionResponse:
        """Wait for every choice and return the whole reply."""
        await self.finish(run)
        choices = []
        for index, progress in enumerate(run.progress):
            message, finish_reason = _reply(progress)
            logprobs = chat_logprobs(progress.logprobs) if run.wants_logprobs else None
            choices.append(wire.Choice(index=index, message=message, finish_reason=finish_reason, logprobs=logprobs))
        return wire.ChatCompletionResponse(
            id=run.id,
            created=run.created,
            model=run.model,
            choices=choices,
            usage=run.usage(),
            references=run.references,
        )

    async def stream(self, run: ChatRun) -> AsyncIterator[wire.ChatCompletionChunk]:
        """Wait for the engine's first event, then return the chunks in la Plateforme's shape: role first,
        text deltas, then finish_reason and usage last.

        Waiting first means a generation that fails at once (an upstream's 4xx, 502 or 504) raises here,
        before any byte is sent, and so is answered with its own status rather than inside a 200 stream.
        """
        first, events = await self.first_event(run)
        return self._chunks(run, first, events)

    async def first_event(
        self, run: ChatRun
    ) -> tuple[tuple[int, GenerationEvent] | None, AsyncIterator[tuple[int, GenerationEvent]]]:
        """The run's first observed event (None: it ended without one) and the rest, for a streamed reply;
        a failure here settles the run and is raised before any byte is sent."""
        events = self.events(run)
        try:
            first = await anext(events, None)
        except BaseException as exc:
            await events.aclose()
            self.settle(run, "error" if isinstance(exc, Exception) else "cancelled")
            raise
        return first, events

    async def _chunks(
        self,
        run: ChatRun,
        first: tuple[int, GenerationEvent] | None,
        events: AsyncIterator[tuple[int, GenerationEvent]],
    ) -> AsyncIterator[wire.ChatCompletionChunk]:
        status = "cancelled"
        holds = [SentenceHold() for _ in run.generations]
        try:
            for index in range(len(run.generations)):
                chunk = self._chunk(run, index, wire.Delta(role="assistant", content=run.prefix))
                if index == 0:
                    chunk.references = run.references
                yield chunk
            if first is not None:
                async for chunk in self._event_chunks(run, *first, holds):
                    yield chunk
                async for index, event in events:
                    if run.progress[index].finish_reason is FinishReason.CONTENT_FILTER:
                        continue  # replaced by a policy's refusal: what it still writes is dropped
                    async for chunk in self._event_chunks(run, index, event, holds):
                        yield chunk
            status = self.final_status(run)
            self.settle(run, status)  # durable before the final chunks and [DONE] go out
            last = len(run.generations) - 1
            for index, progress in enumerate(run.progress):
                message, reason = _reply(progress)
                if message.tool_calls:
                    yield self._chunk(run, index, wire.Delta(tool_calls=message.tool_calls))
                usage = run.usage() if index == last else None
                yield self._chunk(run, index, wire.Delta(), finish_reason=reason, usage=usage)
        except ContentPolicyError:
            status = "ok"  # answered in part, then blocked: the tokens were spent
            raise
        except Exception:
            status = "error"
            raise
        finally:
            self.settle(run, status)

    async def _event_chunks(
        self, run: ChatRun, index: int, event: GenerationEvent, holds: list[SentenceHold]
    ) -> AsyncIterator[wire.ChatCompletionChunk]:
        """The chunks for an observed event; under an output-screening policy its text is held until a sentence
        ends, then screened with everything written before it, and released, replaced or refused."""
        screen = run.screen
        if screen is None or event.is_tool_call:
            if chunk := self._text_chunk(run, index, event):
                yield chunk
            return
        hold = holds[index]
        ready = hold.add(event.text, is_final=event.finish_reason is not None)
        if not ready:
            return
        action = await screen.check(hold.released + ready)
        if action == "block":
            raise screen.blocked_error()
        if action == "refuse":
            run.generations[index].cancel()
            run.progress[index].finish_reason = FinishReason.CONTENT_FILTER
            yield self._chunk(run, index, wire.Delta(content=("\n\n" if hold.released else "") + screen.refusal()))
            return
        hold.released += ready
        yield self._chunk(run, index, wire.Delta(content=await screen.mask(ready)))

    def _text_chunk(self, run: ChatRun, index: int, event: GenerationEvent) -> wire.ChatCompletionChunk | None:
        """The chunk for an observed event's text (and its tokens' log-probabilities); none for text of a tool
        call (calls are sent whole at the end)."""
        if event.is_tool_call or not (event.text or (run.wants_logprobs and event.logprobs)):
            return None
        chunk = self._chunk(run, index, wire.Delta(content=event.text))
        if run.wants_logprobs:
            chunk.choices[0].logprobs = chat_logprobs(event.logprobs)
        return chunk

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

    def observe(self, run: ChatRun, index: int, event: GenerationEvent) -> None:
        progress = run.progress[index]
        if progress.finish_reason is FinishReason.CONTENT_FILTER:
            return  # a policy ended this choice: what its cancelled generation still sends counts for nothing
        progress.completion_tokens = event.completion_tokens
        if event.prompt_logprobs is not None:
            progress.prompt_logprobs = event.prompt_logprobs
        if not event.is_tool_call:
            progress.logprobs.extend(event.logprobs)
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

    def final_status(self, run: ChatRun) -> str:
        return "ok" if all(p.finish_reason is not None for p in run.progress) else "cancelled"

    def abandon(self, run: ChatRun) -> None:
        """Settle a run whose reply was cut off before it was read to its end (client gone early)."""
        self.settle(run, "cancelled")

    def settle(self, run: ChatRun, status: str) -> None:
        """Count and meter the request once, whatever way it ended (finished, failed, or the client left);
        `status` is "ok", "error" or "cancelled"."""
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
            moderation=run.moderation(),
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


async def _screen_replies(run: ChatRun, screen: OutputScreen) -> None:
    """Screen each finished reply whole (a reply that is not streamed): block, replace with the refusal, or
    release with PII masked."""
    for progress in run.progress:
        if progress.tool_calls:
            continue
        text = "".join(progress.text)
        action = await screen.check(text)
        if action == "block":
            raise screen.blocked_error()
        if action == "refuse":
            progress.text = [screen.refusal()]
            progress.finish_reason = FinishReason.CONTENT_FILTER
        else:
            progress.text = [await screen.mask(text)]


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


def check_logprobs(entry: ModelEntry, engine: EngineCapabilities, request: GenerationRequest) -> None:
    """Log-probabilities come from the model's own logits: only an engine that runs the model has them."""
    if request.logprobs is not None and not engine.supports_logprobs:
        raise UnsupportedFeatureError(
            f"model {entry.id!r} does not return log-probabilities (it is served by a remote engine); "
            "remove `logprobs`, or use an embedded model",
            param="logprobs",
        )


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
    if reason is FinishReason.CONTENT_FILTER:
        return "content_filter"
    return None
