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
import warnings
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import llguidance.llamacpp

from galerne.engines.base import EngineCapabilities, EngineStats, PreparedRequest
from galerne.engines.llamacpp.closing import TokenClasses
from galerne.engines.llamacpp.context import ContextShape, DecodeError, LlamaContext
from galerne.engines.llamacpp.guide import GrammarGuide
from galerne.engines.llamacpp.model import LlamaModel
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
from galerne.inference.types import FinishReason, GenerationEvent, GenerationRequest
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


@dataclass(frozen=True, slots=True)
class PreparedSequence:
    """A tokenized request that fits the context, with one grammar guide per choice when constrained."""

    request: GenerationRequest
    prompt: list[int]
    max_new_tokens: int
    guides: tuple[GrammarGuide | None, ...]

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt)

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

    capabilities = EngineCapabilities(supports_chat=True, supports_tools=True, supports_json=True)

    def __init__(self, config: EmbeddedModelConfig) -> None:
        self.config = config
        self.context_length = config.context_length
        self.model = LlamaModel(config.path)
        if config.context_length > self.model.context_length_trained:
            trained = self.model.context_length_trained
            self.model.close()
            raise ConfigurationError(
                f"model {config.model_id!r}: context_length {config.context_length} exceeds the {trained} tokens "
                f"{config.path.name} was trained for; set context_length to at most {trained}"
            )
        self.template = ChatTemplate(
            self.model.chat_template(), bos_token=self.model.bos_token, eos_token=self.model.eos_token
        )
        threads = config.num_threads or os.cpu_count() or 1
        shape = ContextShape(
            num_slots=config.num_slots,
            context_length=config.context_length,
            max_batch_tokens=max(config.max_batch_tokens, config.num_slots + 1),
            num_threads=threads,
        )
        self._context = LlamaContext(self.model, shape)
        with warnings.catch_warnings():  # llguidance calls a llama.cpp binding deprecated in 0.3.36, per token
            warnings.simplefilter("ignore", DeprecationWarning)
            tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(self.model.vocab)
        self._grammars = GrammarCache(tokenizer)
        self._preparers = ThreadPoolExecutor(config.num_preparers, thread_name_prefix=f"prepare-{config.model_id}")
        ending = [self.model.is_end_of_generation(token) for token in range(self.model.num_vocab)]
        self._token_classes = TokenClasses(self.model.pieces, ending)
        self._scheduler = Scheduler(self.model, config.num_slots)
        self._inbox: deque[Sequence] = deque()
        self._wakeup = threading.Condition()
        self._is_stopping = False
        self._is_broken = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{config.model_id}", daemon=True)
        self._thread.start()

    def tokenize_prompt(self, request: GenerationRequest) -> list[int]:
        """The prompt's tokens: template text may hold control tokens, user text never does."""
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

    def _prepare(self, request: GenerationRequest) -> PreparedSequence:
        prompt = self.tokenize_prompt(request)
        if not prompt:
            raise InvalidRequestError("the conversation renders to an empty prompt; send some text")
        max_new = self._max_new_tokens(len(prompt), request.sampling.max_tokens)
        guides: tuple[GrammarGuide | None, ...] = (None,) * request.num_choices
        if request.constraint is not None:
            constraint, classes = request.constraint, self._token_classes
            guides = tuple(
                GrammarGuide.for_constraint(self._grammars, constraint, classes) for _ in range(request.num_choices)
            )
        return PreparedSequence(request=request, prompt=prompt, max_new_tokens=max_new, guides=guides)

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
                prompt=prepared.prompt,
                max_new_tokens=prepared.max_new_tokens,
                sampler=TokenSampler(request.sampling.for_choice(index)),
                text=TextAssembler(request.sampling.stop),
                emit=generation.push,
                guide=guide,
                shares_prompt_with=sequences[0] if sequences else None,
            )
            generation.sequence = sequence
            generations.append(generation)
            sequences.append(sequence)
        if prepared.max_new_tokens == 0:
            for sequence in sequences:
                sequence.emit(sequence.finish_event("", FinishReason.LENGTH))
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

    def stats(self) -> EngineStats:
        return EngineStats(
            num_queued=len(self._inbox) + len(self._scheduler.waiting),
            num_active=self._scheduler.num_active,
            num_slots=self.config.num_slots,
            is_healthy=self._thread.is_alive() and not (self._is_broken or self._is_stopping),
        )

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

    def _max_new_tokens(self, num_prompt: int, requested: int | None) -> int:
        limit = self.context_length
        if num_prompt >= limit:
            raise ContextLengthExceededError(
                f"the prompt is {num_prompt} tokens long but this model's context is {limit} tokens; "
                "shorten the conversation",
                param="messages",
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
