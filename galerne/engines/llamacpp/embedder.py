"""The embedding engine: a BERT-style GGUF encoder, one llama.cpp context, one engine thread.

Concurrent requests share encoder passes: every input is a sequence, and the engine thread packs the
waiting sequences of all requests, oldest first, into one `llama_batch` (one sequence id each, at most
`max_sequences` of them and `max_batch_tokens` tokens), runs one `llama_encode`, and reads each sequence's
pooled vector with `llama_get_embeddings_seq`. The token bound matters: llama.cpp attends over the whole
batch with a mask between sequences, so attention grows with the square of the batch's tokens (measured on
all-MiniLM-L6-v2, 32 inputs of 200 tokens, 1 thread: 18.5 embeddings/s packed 512 tokens at a time, 5.1/s
all in one pass). Short queries still go 32 to a pass.

Inputs are cut as sentence-transformers cuts them: the model's window (`max_seq_length`, read from the GGUF)
counts [CLS] and [SEP], so a longer input keeps its first window - 1 tokens and its [SEP]. Vectors are pooled
by the model's own pooling (mean for MiniLM) and L2-normalised.

Example::

    embedder = LlamaCppEmbedder(EmbedderConfig(path=gguf))
    prepared = await embedder.prepare_embedding(["a query", "a passage"], truncate=False)
    result = await embedder.embed(prepared)      # result.vectors: (2, 384) float32
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as ll
import numpy as np
import numpy.typing as npt

from galerne.engines.base import Embeddings, EngineCapabilities, EngineStats, Generation, PreparedRequest
from galerne.engines.llamacpp.model import GpuPlacement, LlamaModel
from galerne.errors import (
    ConfigurationError,
    ContextLengthExceededError,
    EngineOverloadedError,
    EngineUnavailableError,
    GenerationFailedError,
    UnsupportedFeatureError,
)
from galerne.inference.types import GenerationRequest

logger = logging.getLogger(__name__)

MAX_SEQ_LENGTH_KEY = "sentence_transformers.max_seq_length"  # written by galerne.bert_gguf
STOP_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class EmbedderConfig:
    path: Path
    model_id: str = "embeddings"
    max_sequences: int = 32  # sequences (inputs) per encoder pass: llama.cpp's n_seq_max
    max_batch_tokens: int = 512  # tokens per encoder pass; at least the model's window
    max_queued: int = 2048  # inputs waiting, over all requests; more is a 429
    num_threads: int | None = None
    gpu: GpuPlacement = field(default_factory=GpuPlacement)


@dataclass(frozen=True, slots=True)
class TokenizedInputs:
    """Inputs tokenized and cut to the model's window: what `embed` runs."""

    tokens: tuple[tuple[int, ...], ...]

    @property
    def num_tokens(self) -> int:
        return sum(len(tokens) for tokens in self.tokens)


class _Job:
    """One `embed` call: its vectors fill in as its inputs are encoded, possibly across several passes."""

    def __init__(self, num_inputs: int, dimensions: int, loop: asyncio.AbstractEventLoop) -> None:
        self.vectors = np.empty((num_inputs, dimensions), dtype=np.float32)
        self.num_left = num_inputs
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.is_cancelled = False

    def finish(self, error: Exception | None = None) -> None:
        """Called on the engine thread; resolves the future on the caller's loop."""
        try:
            self.loop.call_soon_threadsafe(self._resolve, error)
        except RuntimeError:  # the caller's loop is closed: nobody waits any more
            self.is_cancelled = True

    def _resolve(self, error: Exception | None) -> None:
        if self.future.done():
            return
        if error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(error)


@dataclass(slots=True)
class _Input:
    job: _Job
    index: int
    tokens: tuple[int, ...]


class LlamaCppEmbedder:
    """Batched sentence embeddings over llama.cpp (see the module docstring)."""

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self.model = LlamaModel(config.path, config.gpu)
        try:
            self.dimensions = int(ll.llama_model_n_embd(self.model.handle))
            self.max_input_tokens = self._window()
            if config.max_batch_tokens < self.max_input_tokens:
                raise ConfigurationError(
                    f"model {config.model_id!r}: max_batch_tokens {config.max_batch_tokens} is below the model's "
                    f"window of {self.max_input_tokens} tokens; set it to at least {self.max_input_tokens}"
                )
            self._sep = int(ll.llama_vocab_sep(self.model.vocab))
            self._handle = self._context(config)
        except BaseException:
            self.model.close()
            raise
        self.context_length = self.max_input_tokens
        self.capabilities = EngineCapabilities(supports_chat=False, supports_embeddings=True)
        self._batch = ll.llama_batch_init(config.max_batch_tokens, 0, 1)
        self._inbox: deque[_Input] = deque()
        self._wakeup = threading.Condition()
        self._is_stopping = False
        self._is_broken = False
        self._num_active = 0
        self.num_encodes = 0  # encoder passes run
        self.num_encoded = 0  # sequences they held: num_encoded / num_encodes is the batching achieved
        self._tokenizers = ThreadPoolExecutor(2, thread_name_prefix=f"tokenize-{config.model_id}")
        self._thread = threading.Thread(target=self._run, name=f"embedder-{config.model_id}", daemon=True)
        self._thread.start()

    def _window(self) -> int:
        """The most tokens one input is read as: the GGUF's sentence-transformers window, else the trained one."""
        buffer = ctypes.create_string_buffer(32)
        length = ll.llama_model_meta_val_str(self.model.handle, MAX_SEQ_LENGTH_KEY.encode(), buffer, 32)
        trained = self.model.context_length_trained
        return min(int(buffer.value.decode()), trained) if length > 0 else trained

    def _context(self, config: EmbedderConfig) -> ctypes.c_void_p:
        params = ll.llama_context_default_params()
        params.n_ctx = config.max_batch_tokens
        params.n_batch = config.max_batch_tokens
        params.n_ubatch = config.max_batch_tokens  # an encoder pass must fit one micro-batch
        params.n_seq_max = config.max_sequences
        params.embeddings = True
        params.pooling_type = ll.LLAMA_POOLING_TYPE_UNSPECIFIED  # the model's own (GGUF metadata)
        params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED  # measured: 2-3x faster on batches of inputs
        threads = config.num_threads or os.cpu_count() or 1
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        handle: ctypes.c_void_p = ll.llama_init_from_model(self.model.handle, params)
        if not handle:
            raise ConfigurationError(
                f"model {config.model_id!r}: llama.cpp could not create an embedding context of "
                f"{config.max_sequences} sequences x {config.max_batch_tokens} tokens; is {config.path.name} "
                "an embedding model?"
            )
        if ll.llama_pooling_type(handle) in (ll.LLAMA_POOLING_TYPE_NONE, ll.LLAMA_POOLING_TYPE_RANK):
            ll.llama_free(handle)
            raise ConfigurationError(
                f"model {config.model_id!r}: {config.path.name} declares no pooling of token vectors into one; "
                "it is not a sentence-embedding model"
            )
        return handle

    # --- the services' side ---------------------------------------------------------------------------

    async def prepare_embedding(
        self, texts: Sequence[str], *, truncate: bool, dimensions: int | None = None
    ) -> TokenizedInputs:
        """Tokenize on a tokenizer thread; an input longer than the window is a 400 unless `truncate`, and so is
        asking for another number of `dimensions` than the model has."""
        if dimensions is not None and dimensions != self.dimensions:
            raise UnsupportedFeatureError(
                f"model {self.config.model_id!r} returns {self.dimensions} dimensions only, not {dimensions}",
                param="dimensions",
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizers, self._tokenize, list(texts), truncate)

    def count_tokens(self, text: str) -> int:
        """Word pieces of `text` with [CLS] and [SEP], uncut (thread-safe: llama.cpp's tokenizer is)."""
        return len(self.model.tokenize(text, parse_special=False, add_bos=True))

    def _tokenize(self, texts: list[str], truncate: bool) -> TokenizedInputs:
        window = self.max_input_tokens
        result: list[tuple[int, ...]] = []
        for index, text in enumerate(texts):
            tokens = self.model.tokenize(text, parse_special=False, add_bos=True)
            if len(tokens) > window:
                if not truncate:
                    raise ContextLengthExceededError(
                        f"input[{index}] is {len(tokens)} tokens long ([CLS] and [SEP] included), but model "
                        f"{self.config.model_id!r} reads at most {window} tokens per input; shorten or split it",
                        param="input",
                    )
                tokens = [*tokens[: window - 1], self._sep]  # as sentence-transformers: the start, then [SEP]
            result.append(tuple(tokens))
        return TokenizedInputs(tuple(result))

    async def embed(self, prepared: object) -> Embeddings:
        """Queue the inputs with everyone else's and wait for their vectors; 429 when the queue is full."""
        if not isinstance(prepared, TokenizedInputs):
            raise TypeError("embed() takes what this engine's prepare_embedding() returned")
        job = _Job(len(prepared.tokens), self.dimensions, asyncio.get_running_loop())
        if not prepared.tokens:
            return Embeddings(job.vectors, 0)
        with self._wakeup:
            if self._is_broken or self._is_stopping:
                raise EngineUnavailableError("the embedding engine is not running; retry shortly")
            if len(self._inbox) + len(prepared.tokens) > self.config.max_queued:
                raise EngineOverloadedError(
                    f"the embedding model is busy: {len(self._inbox)} inputs are already queued; retry shortly"
                )
            self._inbox.extend(_Input(job, index, tokens) for index, tokens in enumerate(prepared.tokens))
            self._wakeup.notify()
        try:
            await job.future
        except asyncio.CancelledError:
            job.is_cancelled = True  # the engine skips what it has not encoded yet
            raise
        return Embeddings(job.vectors, prepared.num_tokens)

    # --- what every engine offers ---------------------------------------------------------------------

    async def prepare(self, request: GenerationRequest) -> PreparedRequest:
        raise UnsupportedFeatureError(
            f"model {self.config.model_id!r} is an embedding model: it offers /v1/embeddings only", param="model"
        )

    def submit(self, prepared: PreparedRequest) -> list[Generation]:
        raise UnsupportedFeatureError(f"model {self.config.model_id!r} is an embedding model", param="model")

    def stats(self) -> EngineStats:
        return EngineStats(
            num_queued=len(self._inbox),
            num_active=self._num_active,
            num_slots=self.config.max_sequences,
            is_healthy=self._thread.is_alive() and not (self._is_broken or self._is_stopping),
        )

    async def probe(self) -> bool:
        return self.stats().is_healthy

    def close(self) -> None:
        """Stop the engine thread, fail what waits, and free llama.cpp memory once nothing can use it."""
        with self._wakeup:
            self._is_stopping = True
            self._wakeup.notify()
        self._tokenizers.shutdown(wait=True, cancel_futures=True)
        self._thread.join(timeout=STOP_TIMEOUT_SECONDS)
        if self._thread.is_alive():
            logger.error("embedding thread of %r did not stop; its memory stays allocated", self.config.model_id)
            return
        self._fail_inbox(EngineUnavailableError("the server is shutting down"))
        ll.llama_batch_free(self._batch)
        ll.llama_free(self._handle)
        self.model.close()

    # --- the engine thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._wakeup:
                    while not (self._inbox or self._is_stopping):
                        self._wakeup.wait()
                    if self._is_stopping:
                        return
                    inputs = self._next_batch()
                    self._num_active = len(inputs)
                if inputs:
                    self._encode(inputs)
                self._num_active = 0
        except Exception:  # a bug in the loop must not leave clients waiting forever
            logger.exception("embedding loop crashed")
            with self._wakeup:
                self._is_broken = True
                self._fail_inbox(GenerationFailedError("internal embedding engine error"))

    def _next_batch(self) -> list[_Input]:
        """The oldest waiting inputs that fit one pass (called under the lock); cancelled ones are dropped."""
        inputs: list[_Input] = []
        num_tokens = 0
        inbox = self._inbox
        while inbox and len(inputs) < self.config.max_sequences:
            item = inbox[0]
            if item.job.is_cancelled:
                inbox.popleft()
                continue
            if num_tokens + len(item.tokens) > self.config.max_batch_tokens:
                break
            inbox.popleft()
            inputs.append(item)
            num_tokens += len(item.tokens)
        return inputs

    def _encode(self, inputs: list[_Input]) -> None:
        batch = self._batch
        row = 0
        for seq_id, item in enumerate(inputs):
            for position, token in enumerate(item.tokens):
                batch.token[row] = token
                batch.pos[row] = position
                batch.n_seq_id[row] = 1
                batch.seq_id[row][0] = seq_id
                batch.logits[row] = 1  # every token's output feeds the pooling
                row += 1
        batch.n_tokens = row
        result = ll.llama_encode(self._handle, batch)  # releases the GIL
        if result != 0:
            logger.error("llama_encode returned %d for %d sequences", result, len(inputs))
            for job in {id(item.job): item.job for item in inputs}.values():
                job.finish(GenerationFailedError("the model failed to encode this batch; retry"))
                job.is_cancelled = True
            return
        self.num_encodes += 1
        self.num_encoded += len(inputs)
        for seq_id, item in enumerate(inputs):
            item.job.vectors[item.index] = _normalised(self._pooled(seq_id))
            item.job.num_left -= 1
            if item.job.num_left == 0:
                item.job.finish()

    def _pooled(self, seq_id: int) -> npt.NDArray[np.float32]:
        pointer = ll.llama_get_embeddings_seq(self._handle, seq_id)
        return np.ctypeslib.as_array(pointer, shape=(self.dimensions,))

    def _fail_inbox(self, error: Exception) -> None:
        jobs = {id(item.job): item.job for item in self._inbox}
        self._inbox.clear()
        for job in jobs.values():
            job.finish(error)


def _normalised(vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector.copy()
