"""Embeddings: resolve the model, check the inputs, admit against the project's limits, embed, meter.

Two doors, one path. `create` answers `POST /v1/embeddings` and refuses (400) an input longer than the model
reads, as OpenAI does; `embed` is the in-process API of document ingestion and retrieval, which cuts
over-long inputs instead (sentence-transformers' behaviour) and takes any number of them. Both reserve the
inputs' tokens against the project's tokens/minute before any vector is computed, and write one usage record
(prompt tokens, cost at the model's input price) per call, however it ends.

Example::

    embedded = await embeddings.embed(["first chunk", "second chunk"], principal)
    embedded.vectors.shape            # (2, 384), float32, rows of norm 1
    scores = embedded.vectors @ query_vector
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from galerne.catalog import ModelEntry
from galerne.engines.base import EmbeddingEngine, Embeddings, TokenCounter
from galerne.errors import (
    EngineOverloadedError,
    EngineUnavailableError,
    InvalidRequestError,
    RateLimitExceededError,
    UnsupportedFeatureError,
)
from galerne.protocol import embeddings as wire
from galerne.services.admission import Admission, Ticket
from galerne.services.auth import Principal
from galerne.services.metering import UsageStatus
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry

# Inputs in one API call (OpenAI allows 2048, la Plateforme fewer); `embed` takes more, this many at a time.
MAX_INPUTS = 512


@dataclass(frozen=True, slots=True)
class Embedded:
    """Vectors of `embed`'s texts, in their order, and what they cost."""

    vectors: npt.NDArray[np.float32]  # (len(texts), dimensions), float32, each row L2-normalised
    num_tokens: int  # tokens read, all texts together (what the project was metered)
    model: str  # the catalogue id of the model that embedded them


class EmbeddingService:
    def __init__(self, registry: ModelRegistry, metrics: Metrics, admission: Admission) -> None:
        self._registry = registry
        self._metrics = metrics
        self._admission = admission

    async def create(self, request: wire.EmbeddingRequest, principal: Principal) -> wire.EmbeddingResponse:
        """Embed the request's inputs; 4xx errors (bad inputs, unknown or non-embedding model, an input too long,
        a dimension or type the model cannot give, limits) are raised before any vector is computed."""
        texts = [request.input] if isinstance(request.input, str) else list(request.input)
        _check_inputs(texts)
        entry = await self._admit_early(request.model, principal)
        engine = self._registry.embedder_for(entry)
        dimensions = _check_output(request, entry, engine.dimensions)
        result = await self._run(entry, engine, texts, principal, truncate=False, dimensions=dimensions)
        data = [
            wire.EmbeddingData(embedding=_encode(vector, request.output_dtype, request.encoding_format), index=index)
            for index, vector in enumerate(result.vectors)
        ]
        num_tokens = result.num_tokens
        return wire.EmbeddingResponse(
            id=uuid.uuid4().hex,
            model=entry.id,
            data=data,
            usage=wire.EmbeddingUsage(prompt_tokens=num_tokens, total_tokens=num_tokens),
        )

    async def embed(self, texts: Sequence[str], principal: Principal, *, model: str | None = None) -> Embedded:
        """Vectors for `texts` (any number; over-long ones are cut to the model's window), metered to the
        principal's project like an API call (one usage record per `MAX_INPUTS` texts).

        `model` None is the catalogue's `embedding_model`, which the platform uses for documents whatever
        models the project may call itself; a named `model` must be visible to the project. Raises the API's
        4xx errors (a model that does not embed, the project's limits or budget).
        """
        entry = (
            self._registry.catalog.embedding_entry()
            if model is None
            else self._registry.catalog.resolve(model, is_visible=principal.may_use)
        )
        engine = self._registry.embedder_for(entry)
        if not texts:
            return Embedded(np.empty((0, engine.dimensions or 0), dtype=np.float32), 0, entry.id)
        parts: list[npt.NDArray[np.float32]] = []
        num_tokens = 0
        for start in range(0, len(texts), MAX_INPUTS):
            await self._precheck(entry, principal)
            result = await self._run(entry, engine, list(texts[start : start + MAX_INPUTS]), principal, truncate=True)
            parts.append(result.vectors)
            num_tokens += result.num_tokens
        return Embedded(np.concatenate(parts), num_tokens, entry.id)

    def token_counter(self) -> Callable[[str], int]:
        """How many tokens the documents' embedding model reads a text as: its own tokenizer when the engine
        has one here, else an estimate from words (a remote model counts upstream)."""
        engine = self._registry.embedder_for(self._registry.catalog.embedding_entry())
        if isinstance(engine, TokenCounter):
            return engine.count_tokens
        return _estimated_tokens

    async def _admit_early(self, model: str, principal: Principal) -> ModelEntry:
        """Resolve the model as the project sees it and refuse what its limits would refuse anyway, before
        tokenizing."""
        entry = self._registry.catalog.resolve(model, is_visible=principal.may_use)
        await self._precheck(entry, principal)
        return entry

    async def _precheck(self, entry: ModelEntry, principal: Principal) -> None:
        try:
            await self._admission.precheck(principal)
        except RateLimitExceededError as exc:
            self._refused(entry, principal, exc)
            raise

    async def _run(
        self,
        entry: ModelEntry,
        engine: EmbeddingEngine,
        texts: list[str],
        principal: Principal,
        *,
        truncate: bool,
        dimensions: int | None = None,
    ) -> Embeddings:
        """Tokenize, reserve the tokens, embed, and settle the usage record whatever happens (an upstream's own
        count replaces the estimate a remote engine reserved)."""
        prepared = await engine.prepare_embedding(texts, truncate=truncate, dimensions=dimensions)
        try:
            ticket = await self._admission.admit(principal, entry, prepared.num_tokens)
        except RateLimitExceededError as exc:
            self._refused(entry, principal, exc)
            raise
        status = UsageStatus.CANCELLED
        started = time.monotonic()
        num_tokens = prepared.num_tokens
        try:
            result = await engine.embed(prepared)
            status, num_tokens = UsageStatus.OK, result.num_tokens
            return result
        except (EngineOverloadedError, EngineUnavailableError):
            self._admission.release_unused(ticket)  # refused before any work: nothing to record
            raise
        except Exception:
            status = UsageStatus.ERROR
            raise
        finally:
            self._settle(ticket, entry, num_tokens, status, started)

    def _settle(self, ticket: Ticket, entry: ModelEntry, num_tokens: int, status: UsageStatus, started: float) -> None:
        if ticket.is_settled:
            return
        self._admission.settle(ticket, prompt_tokens=num_tokens, completion_tokens=0, ttft_seconds=None, status=status)
        self._metrics.requests.labels(entry.id, status.value).inc()
        self._metrics.prompt_tokens.labels(entry.id).inc(num_tokens)
        self._metrics.request_duration.labels(entry.id).observe(time.monotonic() - started)

    def _refused(self, entry: ModelEntry, principal: Principal, error: RateLimitExceededError) -> None:
        self._metrics.refused.labels(entry.id, error.code or "").inc()
        self._admission.count_refusal(principal, error)


def _estimated_tokens(text: str) -> int:
    """Word pieces of English prose run ~1.3 a word; 1.5 leaves room for other languages."""
    return int(len(text.split()) * 1.5) + 2


def _check_inputs(texts: list[str]) -> None:
    if not texts:
        raise InvalidRequestError("`input` is an empty list; send at least one text", param="input")
    if len(texts) > MAX_INPUTS:
        raise InvalidRequestError(
            f"`input` holds {len(texts)} texts; send at most {MAX_INPUTS} per request", param="input"
        )
    for index, text in enumerate(texts):
        if not text:
            where = "`input`" if len(texts) == 1 else f"input[{index}]"
            raise InvalidRequestError(f"{where} is an empty string; send some text", param="input")


def _check_output(request: wire.EmbeddingRequest, entry: ModelEntry, dimensions: int | None) -> int | None:
    """The dimensions to ask the engine for: a model gives its own number of them (None: its upstream decides),
    as floats or as packed sign bits."""
    asked = {value for value in (request.dimensions, request.output_dimension) if value is not None}
    if len(asked) > 1:
        raise InvalidRequestError(
            "`dimensions` and `output_dimension` disagree; they are the same setting, give one", param="dimensions"
        )
    if asked and dimensions is not None and asked != {dimensions}:
        raise UnsupportedFeatureError(
            f"model {entry.id!r} returns {dimensions} dimensions only, not {asked.pop()}; omit `dimensions`",
            param="dimensions" if request.dimensions is not None else "output_dimension",
        )
    if request.output_dtype in ("int8", "uint8"):
        raise UnsupportedFeatureError(
            f"`output_dtype` {request.output_dtype} needs calibration ranges this server does not have; use float, "
            "binary or ubinary",
            param="output_dtype",
        )
    return asked.pop() if asked else None


def _encode(vector: npt.NDArray[np.float32], dtype: wire.OutputDtype, encoding: str) -> list[float] | list[int] | str:
    """A vector as the client asked: floats, or its signs packed 8 to a byte (ubinary: 0..255; binary: the same
    minus 128, as sentence-transformers' `quantize_embeddings`); base64 encodes their bytes (float32 little-endian)."""
    values: npt.NDArray[np.generic]
    if dtype == "float":
        values = vector.astype("<f4")
    else:
        packed = np.packbits(vector > 0)
        values = packed if dtype == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    if encoding == "base64":
        return base64.b64encode(values.tobytes()).decode("ascii")
    listed: list[float] | list[int] = values.tolist()
    return listed
