"""The embedded engine: one GGUF model, one llama.cpp context, one engine thread.

`prepare` renders and tokenizes the prompt once, checks it fits and compiles the grammar of a
constrained request, all on a small pool of preparer threads: a 7 MB prompt or a large schema must
never stall the event loop that serves every other stream. `submit` (on the caller's loop) hands one
`Sequence` per choice to the engine thread, which loops admit → schedule → decode → postprocess and
pushes events back with `loop.call_soon_threadsafe`; `llama_decode` releases the GIL, so the HTTP side
keeps serving while the model computes.

Example::

    engine = LlamaCppEngine(EmbeddedModelConfig(path=gguf, context_length=4096, num_slots=8))
    prepared = await engine.prepare(GenerationRequest(messages=(ChatMessage(Role.USER, "Hi"),)))
    [generation] = engine.submit(prepared)
    async for event in generation.events(): print(event.text, end="")
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from galerne.engines.base import EngineCapabilities, EngineStats, PreparedRequest
from galerne.engines.llamacpp.closing import TokenClasses
from galerne.engines.llamacpp.context import ContextShape, DecodeError, LlamaContext
from galerne.engines.llamacpp.guide import GrammarGuide
from galerne.engines.llamacpp.lltokenizer import grammar_tokenizer
from galerne.engines.llamacpp.model import GpuPlacement, LlamaModel
from galerne.engines.llamacpp.sampler import TokenSampler
from galerne.engines.llamacpp.scheduler import Scheduler, Sequence
from galerne.engines.llamacpp.template import ChatTemplate
from galerne.engines.llamacpp.text import TextAssembler
from galerne.errors import (
    ConfigurationError,
    ContextLengthExceededError,
    EngineOverloadedError,
    EngineUnavailableError,
    InvalidRequestError,
)
from galerne.inference.types import FimPrompt, FinishReason, GenerationEvent, GenerationRequest, TextPrompt
from galerne.structured.grammars import GrammarCache
from galerne.structured.prompts import with_output_instructions

logger = logging.getLogger(__name__)

# How long `close` waits for the engine thread to leave its current decode before giving up on it.
STOP_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class EmbeddedModelConfig:
    path: Path
    context_length: int = 4096
    num_slots: int = 8
    max_batch_tokens: int = 256
    max_queued: int = 64
    num_threads: int | None = None
    model_id: str = "model"
    # Threads that render, tokenize and compile grammars off the event loop: enough that short requests are
    # not queued behind a few huge ones (measured: with 2, four heavy requests doubled short ones' TTFT).
    num_preparers: int = 8
    # A Jinja chat template used instead of the GGUF's (a base model's GGUF carries none).
    chat_template: str | None = None
    # Strings that end every reply besides the client's; one that is a single control token ends it as a token.
    stop: tuple[str, ...] = ()
    gpu: GpuPlacement = field(default_factory=GpuPlacement)  # CPU only unless the catalogue offloads layers


@dataclass(frozen=True, slots=True)
class GrammarTools:
    """What constrained decoding needs per model: compiled grammars and what each token does to JSON."""

    grammars: GrammarCache
    token_classes: TokenClasses


def split_stops(model: LlamaModel, stop: tuple[str, ...]) -> tuple[list[int], tuple[str, ...]]:
    """Catalogue stops as control tokens (their text is never generated, only the token) and plain strings."""
    tokens: list[int] = []
    strings: list[str] = []
    for item in stop:
        ids = model.tokenize(item, parse_special=True)
        if len(ids) == 1 and not model.pieces[ids[0]]:
            tokens.append(ids[0])
        else:
            strings.append(item)
    return tokens, tuple(strings)


@dataclass(frozen=True, slots=True)
class PreparedSequence:
    """A tokenized request that fits the context, with one grammar guide per choice when constrained."""

    request: GenerationRequest
    prompt: list[int]
    max_new_tokens: int
    guides: tuple[GrammarGuide | None, ...]
    scored_from: int | None = None  # prompt tokens from here on get log-probabilities
    visible_from: int = 0  # a BOS added to a text prompt is not reported with its tokens
    # Scoring: one prompt per choice (a shared context, then each choice's continuation); empty otherwise.
    choice_prompts: tuple[list[int], ...] = ()

    @property
    def prompt_tokens(self) -> int:
        """Tokens the prompt costs: a context shared by several continuations counts once."""
        if not self.choice_prompts:
            return len(self.prompt)
        shared = self.scored_from if self.scored_from is not None else 0
        return shared + sum(len(p) - shared for p in self.choice_prompts)

    def prompt_of(self, choice: int) -> list[int]:
        return self.choice_prompts[choice] if self.choice_prompts else self.prompt

    def scored_from_of(self, choice: int) -> int | None:
        """Echo scores the shared prompt once (first choice); scoring scores every continuation."""
        if self.scored_from is None or self.scored_from > len(self.prompt_of(choice)):
            return None
        return self.scored_from if choice == 0 or self.choice_prompts else None

    @property
    def num_choices(self) -> int:
        return len(self.guides)


class EmbeddedGeneration:
    """The caller's side of one sequence: an asyncio queue fed by the engine thread."""

    def __init__(self, engine: LlamaCppEngine, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[GenerationEvent] = asyncio.Queue()
        self.sequence: Sequence | None = None

    @property
    def cached_tokens(self) -> int:
        return self.sequence.num_cached if self.sequence is not None else 0

    def push(self, event: GenerationEvent) -> None:
        """Called on the engine thread; hops to the caller's loop."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            if self.sequence is not None:
                self.sequence.is_cancelled = True

    async def events(self) -> AsyncIterator[GenerationEvent]:
        """Events until the final one; leaving early (client gone) cancels the sequence."""
        finished = False
        try:
            while not finished:
                event = await self._queue.get()
                finished = event.finish_reason is not None
                yield event
        finally:
            if not finished:
                self.cancel()

    def cancel(self) -> None:
        if self.sequence is not None and not self.sequence.is_cancelled:
            self.sequence.is_cancelled = True
            self._engine.wake()


class LlamaCppEngine:
    """Continuous batching over llama.cpp for one model (see `scheduler` for the policy)."""

    def __init__(self, config: EmbeddedModelConfig) -> None:
        self.config = config
        self.context_length = config.context_length
        self.model = LlamaModel(config.path, config.gpu)
        self.capabilities = EngineCapabilities(
            supports_chat=True,
            supports_tools=True,
            supports_json=True,
            supports_logprobs=True,
            supports_text_completion=True,
            supports_fim=self.model.fim_tokens is not None,
        )
        if config.context_length > self.model.context_length_trained:
            trained = self.model.context_length_trained
            self.model.close()
            raise ConfigurationError(
                f"model {config.model_id!r}: context_length {config.context_length} exceeds the {trained} tokens "
                f"{config.path.name} was trained for; set context_length to at most {trained}"
            )
        try:
            self.template = ChatTemplate(
                config.chat_template or self.model.chat_template(),
                bos_token=self.model.bos_token,
                eos_token=self.model.eos_token,
            )
            self.template.check()
        except (ConfigurationError, InvalidRequestError) as exc:
            self.model.close()
            raise ConfigurationError(f"model {config.model_id!r}: {exc.message}") from exc
        stop_tokens, self._stop_strings = split_stops(self.model, config.stop)
        for token in stop_tokens:
            self.model.mark_end_of_generation(token)
        threads = config.num_threads or os.cpu_count() or 1
        shape = ContextShape(
            num_slots=config.num_slots,
            context_length=config.context_length,
            max_batch_tokens=max(config.max_batch_tokens, config.num_slots + 1),
            num_threads=threads,
        )
        self._context = LlamaContext(self.model, shape)
        self._preparers = ThreadPoolExecutor(config.num_preparers, thread_name_prefix=f"prepare-{config.model_id}")
        # The grammar tokenizer takes seconds for a large vocabulary (262k tokens for Gemma): it is built on a
        # preparer thread, so /health and unconstrained chat do not wait; constrained requests wait for it.
        self._grammar_tools: Future[GrammarTools] = self._preparers.submit(self._build_grammar_tools)
        self._scheduler = Scheduler(self.model, config.num_slots)
        self._inbox: deque[Sequence] = deque()
        self._wakeup = threading.Condition()
        self._is_stopping = False
        self._is_broken = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{config.model_id}", daemon=True)
        self._thread.start()

    def tokenize_prompt(self, request: GenerationRequest) -> list[int]:
        """The prompt's tokens: template text may hold control tokens, user text never does."""
        if request.prompt is not None:
            return self._raw_prompt(request.prompt, scores_prompt=False)[0][0]
        messages = with_output_instructions(request.messages, request.constraint)
        rendered = self.template.render(messages, assistant_prefix=request.assistant_prefix)
        for text in rendered.unseparated_user_texts:
            if self.model.tokenize(text, parse_special=True) != self.model.tokenize(text, parse_special=False):
                raise InvalidRequestError(
                    "a message contains control-token text (such as <|im_end|>) that this model's chat template "
                    "cannot keep apart from its own; remove it"
                )
        segments = rendered.segments
        tokens: list[int] = []
        bos = self.model.bos_token
        if self.model.adds_bos and not (segments and segments[0].text.startswith(bos) and bos):
            tokens.extend(self.model.tokenize("", parse_special=False, add_bos=True))
        for segment in segments:
            tokens.extend(self.model.tokenize(segment.text, parse_special=not segment.is_user_text))
        return tokens

    async def prepare(self, request: GenerationRequest) -> PreparedSequence:
        """Tokenize once, check the context and compile the grammar, on a preparer thread.

        Raises 400 when the prompt cannot fit or the schema cannot be enforced.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._preparers, self._prepare, request)

    def _bos(self) -> list[int]:
        return self.model.tokenize("", parse_special=False, add_bos=True) if self.model.adds_bos else []

    def _raw_prompt(
        self, prompt: TextPrompt | FimPrompt, *, scores_prompt: bool
    ) -> tuple[list[list[int]], int | None, int]:
        """Tokens of a prompt given as text (never parsed for control tokens), one list per choice when
        each has its own continuation; where the scored span starts; how many leading tokens (a BOS) the
        text did not contain."""
        bos = self._bos()
        model = self.model
        if isinstance(prompt, FimPrompt):
            fim = model.fim_tokens
            if fim is None:
                raise InvalidRequestError(
                    f"model {self.config.model_id!r} has no fill-in-the-middle tokens in its vocabulary; "
                    "use a code model whose GGUF declares prefix, suffix and middle tokens"
                )
            prefix = model.tokenize(prompt.prefix, parse_special=False)
            suffix = model.tokenize(prompt.suffix, parse_special=False)
            return [[*bos, fim.prefix, *prefix, fim.suffix, *suffix, fim.middle]], None, len(bos)
        if not prompt.continuations:
            tokens = bos + model.tokenize(prompt.text, parse_special=False)
            return [tokens], (1 if scores_prompt else None), len(bos)  # echo: all but the first token
        context = prompt.text
        spaces = len(context) - len(context.rstrip())
        moved = context[len(context) - spaces :] if spaces else ""
        context = context[: len(context) - spaces]  # lm-eval moves trailing whitespace to the continuation
        prompts = []
        if not context:  # lm-eval: an empty context is the BOS token (or the end-of-text one) alone
            first = bos or [model.bos_token_id if model.bos_token_id >= 0 else model.eos_token_id]
            for continuation in prompt.continuations:
                prompts.append(first + model.tokenize(moved + continuation, parse_special=False))
            return prompts, (1 if scores_prompt else None), 1
        context_tokens = bos + model.tokenize(context, parse_special=False)
        for continuation in prompt.continuations:
            whole = bos + model.tokenize(context + moved + continuation, parse_special=False)
            prompts.append(context_tokens + whole[len(context_tokens) :])
        return prompts, (len(context_tokens) if scores_prompt else None), len(bos)

    def _prepare(self, request: GenerationRequest) -> PreparedSequence:
        scored_from: int | None = None
        visible_from = 0
        scores_prompt = request.logprobs is not None and request.logprobs.of_prompt
        choice_prompts: tuple[list[int], ...] = ()
        if request.prompt is not None:
            prompts, scored_from, visible_from = self._raw_prompt(request.prompt, scores_prompt=scores_prompt)
            prompt = prompts[0]
            if len(prompts) > 1 or (isinstance(request.prompt, TextPrompt) and request.prompt.continuations):
                if len(prompts) != request.num_choices:
                    raise InvalidRequestError("one continuation per choice is needed", param="continuations")
                choice_prompts = tuple(prompts)
            if not prompt:
                raise InvalidRequestError("the prompt is empty; send some text", param="prompt")
        else:
            prompt = self.tokenize_prompt(request)
        if not prompt:
            raise InvalidRequestError("the conversation renders to an empty prompt; send some text")
        longest = max((len(p) for p in choice_prompts), default=len(prompt))
        max_new = self._max_new_tokens(
            longest, request.sampling.max_tokens, param="messages" if request.prompt is None else "prompt"
        )
        guides: tuple[GrammarGuide | None, ...] = (None,) * request.num_choices
        if request.constraint is not None:
            tools = self._grammar_tools.result()
            constraint, grammars, classes = request.constraint, tools.grammars, tools.token_classes
            guides = tuple(
                GrammarGuide.for_constraint(grammars, constraint, classes) for _ in range(request.num_choices)
            )
        return PreparedSequence(
            request=request,
            prompt=prompt,
            max_new_tokens=max_new,
            guides=guides,
            scored_from=scored_from,
            visible_from=visible_from,
            choice_prompts=choice_prompts,
        )

    def submit(self, prepared: PreparedRequest) -> list[EmbeddedGeneration]:
        """Queue one sequence per choice; raises 429 if the queue is full, 503 if the engine stopped.

        Choices after the first copy the first one's prompt KV rather than prefilling it again.
        """
        if not isinstance(prepared, PreparedSequence):
            raise TypeError("submit() takes what this engine's prepare() returned")
        request = prepared.request
        generations: list[EmbeddedGeneration] = []
        sequences: list[Sequence] = []
        for index, guide in enumerate(prepared.guides):
            generation = EmbeddedGeneration(self, prepared.prompt_tokens)
            sequence = Sequence(
                prompt=prepared.prompt_of(index),
                max_new_tokens=prepared.max_new_tokens,
                sampler=TokenSampler(request.sampling.for_choice(index)),
                # A chat reply starts a turn, so its leading spaces are noise; a continued assistant prefix or a
                # raw/FIM prompt continues text, where " Paris" after "is" must keep its space.
                text=TextAssembler(
                    request.sampling.stop + self._stop_strings,
                    strips_leading_spaces=request.prompt is None and not request.assistant_prefix,
                ),
                emit=generation.push,
                guide=guide,
                shares_prompt_with=sequences[0] if sequences else None,
                logprobs=request.logprobs,
                scored_from=prepared.scored_from_of(index),
                visible_from=prepared.visible_from,
            )
            generation.sequence = sequence
            generations.append(generation)
            sequences.append(sequence)
        if prepared.max_new_tokens == 0:  # nothing to compute, unless the prompt itself is scored
            for sequence in [s for s in sequences if s.scored_from is None]:
                sequence.send(sequence.finish_event("", FinishReason.LENGTH))
            sequences = [s for s in sequences if s.scored_from is not None]
            if not sequences:
                return generations
        with self._wakeup:
            # Checked under the lock the engine thread takes when it stops or breaks, so a sequence is
            # never queued behind a loop that will not read it.
            if self._is_broken or self._is_stopping:
                raise EngineUnavailableError("the model engine is not running; retry shortly")
            if len(self._inbox) + len(self._scheduler.waiting) + len(sequences) > self.config.max_queued:
                raise EngineOverloadedError(
                    f"the model is busy: {self.config.max_queued} requests are already queued; retry shortly"
                )
            self._inbox.extend(sequences)
            self._wakeup.notify()
        return generations

    def wait_until_ready(self) -> None:
        """Block until the grammar tokenizer is built (benchmarks call this to time requests, not start-up)."""
        self._grammar_tools.result()

    def _build_grammar_tools(self) -> GrammarTools:
        started = time.monotonic()
        tokenizer = grammar_tokenizer(self.model)
        ending = [self.model.is_end_of_generation(token) for token in range(self.model.num_vocab)]
        tools = GrammarTools(GrammarCache(tokenizer), TokenClasses(self.model.pieces, ending))
        logger.info(
            "model %r: grammar tokenizer for %d tokens built in %.1f s",
            self.config.model_id, self.model.num_vocab, time.monotonic() - started,
        )
        return tools

    def stats(self) -> EngineStats:
        return EngineStats(
            num_queued=len(self._inbox) + len(self._scheduler.waiting),
            num_active=self._scheduler.num_active,
            num_slots=self.config.num_slots,
            is_healthy=self._thread.is_alive() and not (self._is_broken or self._is_stopping),
        )

    async def probe(self) -> bool:
        """Healthy while its loop runs (the router's health check; there is nothing remote to ask)."""
        return self.stats().is_healthy

    def wake(self) -> None:
        with self._wakeup:
            self._wakeup.notify()

    def close(self) -> None:
        """Stop the engine thread, fail what is left, and free llama.cpp memory once nothing can use it."""
        with self._wakeup:
            self._is_stopping = True
            self._wakeup.notify()
        self._preparers.shutdown(wait=True, cancel_futures=True)
        self._thread.join(timeout=STOP_TIMEOUT_SECONDS)
        if self._thread.is_alive():
            # Stuck inside llama_decode: freeing the context under it would crash the process. The
            # thread is a daemon; its memory goes with the process.
            logger.error(
                "engine thread of %r did not stop in %.0f s; its memory stays allocated",
                self.config.model_id,
                STOP_TIMEOUT_SECONDS,
            )
            return
        self._scheduler.fail_all(self._context, "the server is shutting down")
        self._fail_inbox("the server is shutting down")
        self._context.close()
        self.model.close()

    def _fail_inbox(self, message: str) -> None:
        while self._inbox:
            sequence = self._inbox.popleft()
            sequence.emit(sequence.finish_event("", FinishReason.ERROR, message))

    def _max_new_tokens(self, num_prompt: int, requested: int | None, *, param: str = "messages") -> int:
        limit = self.context_length
        if num_prompt >= limit:
            raise ContextLengthExceededError(
                f"the prompt is {num_prompt} tokens long but this model's context is {limit} tokens; "
                "shorten the conversation",
                param=param,
            )
        if requested is None:
            return limit - num_prompt
        if num_prompt + requested > limit:
            raise ContextLengthExceededError(
                f"prompt ({num_prompt} tokens) + max_tokens ({requested}) exceeds this model's context of "
                f"{limit} tokens; lower max_tokens to at most {limit - num_prompt} or shorten the conversation",
                param="max_tokens",
            )
        return requested

    def _run(self) -> None:
        scheduler, context = self._scheduler, self._context
        try:
            while True:
                with self._wakeup:
                    while not (self._inbox or scheduler.has_work or self._is_stopping):
                        self._wakeup.wait()
                    if self._is_stopping:
                        return
                    while self._inbox:
                        scheduler.add(self._inbox.popleft())
                self._step(scheduler, context)
        except Exception:  # a bug in the loop must not leave clients waiting forever
            logger.exception("engine loop crashed")
            with self._wakeup:
                self._is_broken = True
                self._fail_inbox("internal engine error")
            scheduler.fail_all(context, "internal engine error")

    def _step(self, scheduler: Scheduler, context: LlamaContext) -> None:
        scheduler.drop_cancelled()
        scheduler.admit(context)
        if not scheduler.schedule(context):
            return
        try:
            context.decode()
        except DecodeError as exc:
            logger.error("decode failed: %s", exc)
            scheduler.fail_running(context, "the model failed to decode this batch; retry")
            return
        scheduler.postprocess(context)
