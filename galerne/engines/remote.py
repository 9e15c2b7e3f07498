"""The remote engine: forwards validated requests to an OpenAI-compatible upstream (la Plateforme, Azure,
vLLM, another Galerne) and streams its reply back as engine events.

Galerne stays the gateway — keys, limits, metering — while the model runs elsewhere. The upstream key is
read from the environment or a secret file at start-up and never appears in errors or logs; the upstream's
address comes from the catalogue alone, never from a client. Tools, `response_format`, stops, seeds and `n`
pass through (`openai_wire` owns the field names); text chunks are forwarded as they arrive, tool calls are
handed over whole at the end.

Three clocks bound an upstream: connecting (`connect_timeout_seconds`), the first byte of its answer
(`first_byte_timeout_seconds`) and the silence between two chunks (`timeout_seconds`); past any of them the
client gets a 504. Connection errors and 5xx answers are retried with exponential backoff (`max_retries`),
only while nothing has been read: never a 4xx, never once a reply has started.

Example::

    engine = RemoteEngine(RemoteModelConfig(base_url="http://10.0.0.5:8000/v1", upstream_model="mistral-small"))
    [generation] = engine.submit(await engine.prepare(request))
    async for event in generation.events(): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import numpy as np
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from galerne.engines.base import Embeddings, EngineCapabilities, EngineStats, PreparedRequest
from galerne.engines.openai_wire import (
    FINISH_REASONS,
    Chunk,
    Dialect,
    EmbeddingReply,
    Reply,
    ToolCallAssembler,
    Usage,
    embedding_body,
    request_body,
)
from galerne.errors import (
    ContextLengthExceededError,
    EngineOverloadedError,
    GalerneError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from galerne.inference.types import FinishReason, GenerationEvent, GenerationRequest

logger = logging.getLogger(__name__)

# Without a tokenizer for the upstream model, prompts are estimated at 4 characters a token plus a few
# tokens of chat markup per message. The estimate only sizes the rate-limit reservation; usage records
# take the upstream's own counts.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
MAX_BACKOFF_SECONDS = 2.0
PROBE_SECONDS = 5.0
# Upstream statuses that say the gateway is set up wrong (its key, the upstream model or URL): not the client's doing.
_GATEWAY_SETUP_STATUSES = frozenset({401, 403, 404, 407})
_SEE_LOG = " (the server log has the details)"


@dataclass(frozen=True, slots=True)
class RemoteModelConfig:
    base_url: str
    upstream_model: str
    api_key: str | None = None
    context_length: int = 32768
    max_concurrent_requests: int = 64
    timeout_seconds: float = 600.0  # the longest silence between two chunks (and before the first byte, by default)
    model_id: str = "remote"
    connect_timeout_seconds: float = 10.0
    first_byte_timeout_seconds: float | None = None  # None: `timeout_seconds`
    max_retries: int = 2  # more attempts after a connection error or a 5xx, before anything was read
    retry_backoff_seconds: float = 0.1  # the first wait; it doubles (with jitter) up to 2 s
    dialect: Dialect = "openai"
    supports_tools: bool = True
    supports_json: bool = True
    supports_embeddings: bool = False


@dataclass(frozen=True, slots=True)
class RemoteEmbedding:
    """Texts for the upstream's `/embeddings`, with an estimate of their tokens for the rate-limit reservation."""

    texts: tuple[str, ...]
    dimensions: int | None
    num_tokens: int


@dataclass(frozen=True, slots=True)
class RemoteRequest:
    request: GenerationRequest
    prompt_tokens: int
    max_new_tokens: int

    @property
    def num_choices(self) -> int:
        return self.request.num_choices


class _ServerFailure(Exception):
    """A 5xx answer, read and released: retried while attempts remain, then reported as a 502."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"answered HTTP {status}: {message}")


class RemoteGeneration:
    """One upstream call, started when the consumer first reads and closed when it stops reading."""

    def __init__(self, engine: RemoteEngine, prepared: RemoteRequest) -> None:
        self.prompt_tokens = prepared.prompt_tokens
        self.completion_tokens = 0
        self._engine = engine
        self._prepared = prepared
        self._is_cancelled = False

    @property
    def cached_tokens(self) -> int:
        return 0

    def cancel(self) -> None:
        self._is_cancelled = True

    async def events(self) -> AsyncIterator[GenerationEvent]:
        engine = self._engine
        engine.num_active += 1
        body = engine.body(self._prepared)
        try:
            response = await engine.open(body)
            try:
                if response.status != 200:
                    yield self._failure(*await _refusal(response, engine.config))
                    return
                events = self._streamed_events(response) if body["stream"] else self._whole_reply(response)
                async for event in events:
                    yield event
            finally:
                response.release()
        except TimeoutError as exc:  # before ClientError: aiohttp's timeouts are both
            yield self._failure(
                UpstreamTimeoutError(
                    f"model {engine.config.model_id!r}: its upstream did not answer in time; "
                    f"retry later, or ask the operator{_SEE_LOG}"
                ),
                f"timed out ({type(exc).__name__}; connect {engine.config.connect_timeout_seconds:g} s, "
                f"first byte {engine.first_byte_seconds:g} s, between chunks {engine.config.timeout_seconds:g} s)",
            )
        except _ServerFailure as exc:
            yield self._failure(self._bad_answer(), str(exc))
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: pydantic's, or a line too long
            yield self._failure(self._bad_answer(), f"failed: {type(exc).__name__}: {exc}")
        finally:
            engine.num_active -= 1

    async def _streamed_events(self, response: aiohttp.ClientResponse) -> AsyncIterator[GenerationEvent]:
        finish: FinishReason | None = None
        calls = ToolCallAssembler()
        idle_seconds = self._engine.config.timeout_seconds
        while True:  # one SSE line at a time, each within the idle timeout
            async with asyncio.timeout(idle_seconds):
                raw = await response.content.readline()
            if not raw or self._is_cancelled:
                break
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line.removeprefix(b"data:").strip()
            if data == b"[DONE]":
                continue  # read to the end, so the connection goes back to the pool
            chunk = Chunk.model_validate_json(data)
            if chunk.usage:
                self._take_usage(chunk.usage)
            for choice in chunk.choices:
                delta = choice.delta
                if delta and delta.tool_calls:
                    calls.add(delta.tool_calls)
                if delta and delta.content:
                    self.completion_tokens += 0 if chunk.usage else 1
                    yield GenerationEvent(delta.content, self.prompt_tokens, self.completion_tokens)
                if choice.finish_reason:
                    finish = FINISH_REASONS.get(choice.finish_reason, FinishReason.STOP)
        if self._is_cancelled:
            return
        if finish is None:
            yield self._failure(self._bad_answer(), "ended its stream without a finish_reason")
            return
        tool_calls = calls.calls()
        if tool_calls:
            finish = FinishReason.TOOL_CALLS
        yield GenerationEvent("", self.prompt_tokens, self.completion_tokens, finish, tool_calls=tool_calls)

    async def _whole_reply(self, response: aiohttp.ClientResponse) -> AsyncIterator[GenerationEvent]:
        """A client that does not stream gets the upstream's reply in one piece: one request, one parse."""
        async with asyncio.timeout(self._engine.config.timeout_seconds):
            reply = Reply.model_validate_json(await response.read())
        if reply.usage:
            self._take_usage(reply.usage)
        choice = reply.choices[0]
        text = choice.message.content or ""
        finish = FINISH_REASONS.get(choice.finish_reason or "stop", FinishReason.STOP)
        tool_calls = reply.tool_calls()
        if tool_calls:
            finish = FinishReason.TOOL_CALLS
        elif text:
            yield GenerationEvent(text, self.prompt_tokens, self.completion_tokens)
        yield GenerationEvent("", self.prompt_tokens, self.completion_tokens, finish, tool_calls=tool_calls)

    def _take_usage(self, usage: Usage) -> None:
        if usage.prompt_tokens is not None:
            self.prompt_tokens = usage.prompt_tokens
        if usage.completion_tokens is not None:
            self.completion_tokens = usage.completion_tokens

    def _bad_answer(self) -> UpstreamError:
        return UpstreamError(
            f"model {self._engine.config.model_id!r} got no valid answer from its upstream; "
            f"retry later, or ask the operator{_SEE_LOG}"
        )

    def _failure(self, error: GalerneError, detail: str) -> GenerationEvent:
        """The details (status, upstream text, exception) go to the log; the client gets `error` alone."""
        config = self._engine.config
        logger.warning(
            "model %r: upstream %r at %s %s", config.model_id, config.upstream_model, config.base_url, detail
        )
        return GenerationEvent(
            "", self.prompt_tokens, self.completion_tokens, FinishReason.ERROR, f"upstream {detail}", failure=error
        )


class RemoteEngine:
    dimensions: int | None = None  # the upstream's; `dimensions` asked by a client is passed on

    def __init__(self, config: RemoteModelConfig) -> None:
        self.config = config
        self.capabilities = EngineCapabilities(
            supports_chat=True,
            supports_tools=config.supports_tools,
            supports_json=config.supports_json,
            supports_embeddings=config.supports_embeddings,
        )
        self.context_length = config.context_length
        self.max_input_tokens = config.context_length
        self.num_active = 0
        root = config.base_url.rstrip("/")
        self.completions_url = root + "/chat/completions"
        self.embeddings_url = root + "/embeddings"
        self.models_url = root + "/models"
        self.first_byte_seconds = config.first_byte_timeout_seconds or config.timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        self._closing: asyncio.Task[None] | None = None

    async def prepare(self, request: GenerationRequest) -> RemoteRequest:
        prompt = sum(
            math.ceil(len(message.content) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE for message in request.messages
        )
        if request.assistant_prefix:
            prompt += math.ceil(len(request.assistant_prefix) / CHARS_PER_TOKEN)
        requested = request.sampling.max_tokens
        if prompt >= self.context_length or (requested is not None and prompt + requested > self.context_length):
            raise ContextLengthExceededError(
                f"the prompt (about {prompt} tokens) plus max_tokens does not fit this model's context of "
                f"{self.context_length} tokens; shorten the conversation or lower max_tokens",
                param="messages",
            )
        max_new = requested if requested is not None else self.context_length - prompt
        return RemoteRequest(request=request, prompt_tokens=prompt, max_new_tokens=max_new)

    def submit(self, prepared: PreparedRequest) -> list[RemoteGeneration]:
        """One upstream request per choice, each with its own seed (seed + index), like the embedded engine:
        each choice streams (and, behind a router, fails over) on its own."""
        if not isinstance(prepared, RemoteRequest):
            raise TypeError("submit() takes what this engine's prepare() returned")
        if self.num_active + prepared.num_choices > self.config.max_concurrent_requests:
            raise EngineOverloadedError(
                f"the upstream of this model already has {self.config.max_concurrent_requests} requests in flight; "
                "retry shortly"
            )
        request = prepared.request
        return [
            RemoteGeneration(self, replace(prepared, request=replace(request, sampling=request.sampling.for_choice(i))))
            for i in range(prepared.num_choices)
        ]

    async def prepare_embedding(
        self, texts: Sequence[str], *, truncate: bool, dimensions: int | None = None
    ) -> RemoteEmbedding:
        """Estimate the tokens (the upstream counts them for the usage record); `truncate` cuts each text to about
        the model's window in characters, and the upstream cuts or refuses what is still too long."""
        longest = self.context_length * CHARS_PER_TOKEN
        kept = tuple(text[:longest] if truncate else text for text in texts)
        estimate = sum(math.ceil(len(text) / CHARS_PER_TOKEN) + 2 for text in kept)
        return RemoteEmbedding(kept, dimensions, estimate)

    async def embed(self, prepared: object) -> Embeddings:
        """One upstream call for all the texts (retried on connection errors and 5xx, as chat is); its 4xx is
        passed on, anything else it does wrong is a 502/504 the router may fail over."""
        if not isinstance(prepared, RemoteEmbedding):
            raise TypeError("embed() takes what this engine's prepare_embedding() returned")
        config = self.config
        body = embedding_body(
            prepared.texts, upstream_model=config.upstream_model, dimensions=prepared.dimensions, dialect=config.dialect
        )
        self.num_active += 1
        try:
            response = await self.open(body, url=self.embeddings_url)
            try:
                if response.status != 200:
                    error, detail = await _refusal(response, config)
                    self._log_failure(detail)
                    raise error
                async with asyncio.timeout(config.timeout_seconds):
                    reply = EmbeddingReply.model_validate_json(await response.read())
                vectors = np.array(reply.vectors(len(prepared.texts)), dtype=np.float32)
            finally:
                response.release()
        except TimeoutError as exc:
            self._log_failure(f"timed out ({type(exc).__name__})")
            raise UpstreamTimeoutError(
                f"model {config.model_id!r}: its upstream did not answer in time; retry later{_SEE_LOG}"
            ) from exc
        except (_ServerFailure, aiohttp.ClientError, ValueError) as exc:
            self._log_failure(f"failed: {type(exc).__name__}: {exc}")
            raise UpstreamError(
                f"model {config.model_id!r} got no valid answer from its upstream; retry later{_SEE_LOG}"
            ) from exc
        finally:
            self.num_active -= 1
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalised = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)  # as the embedded engine gives
        counted = reply.usage.prompt_tokens if reply.usage is not None else None
        return Embeddings(normalised, prepared.num_tokens if counted is None else counted)

    def _log_failure(self, detail: str) -> None:
        config = self.config
        logger.warning(
            "model %r: upstream %r at %s %s", config.model_id, config.upstream_model, config.base_url, detail
        )

    def stats(self) -> EngineStats:
        # Healthy while it runs: an unreachable upstream fails its own requests, it does not stop this engine.
        return EngineStats(
            num_queued=0, num_active=self.num_active, num_slots=self.config.max_concurrent_requests, is_healthy=True
        )

    async def probe(self) -> bool:
        """Whether the upstream answers at all (`GET {base_url}/models`, which vLLM, la Plateforme and
        OpenAI all serve): any status below 500 says it is up, even one refusing our key."""
        try:
            async with asyncio.timeout(PROBE_SECONDS), self.session().get(self.models_url) as response:
                return response.status < 500
        except (TimeoutError, aiohttp.ClientError):
            return False

    def close(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        # Without a running loop the process is ending, and its sockets with it.
        with contextlib.suppress(RuntimeError):
            self._closing = asyncio.get_running_loop().create_task(session.close())

    def session(self) -> aiohttp.ClientSession:
        """One pooled session, made on first use so it belongs to the serving loop. aiohttp rather than
        httpx: at gateway rates the client's own per-request cost is most of the gateway's overhead."""
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
            self._session = aiohttp.ClientSession(
                headers=headers,
                # No cap on a whole reply (a long stream is fine): the first byte and each chunk have their own.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout_seconds),
                connector=aiohttp.TCPConnector(limit=self.config.max_concurrent_requests),
            )
        return self._session

    async def open(self, body: dict[str, Any], *, url: str | None = None) -> aiohttp.ClientResponse:
        """Post `body` and return the upstream's answer once its headers are in (within the first-byte timeout).

        Connection errors (refused, reset, a pooled connection the upstream had closed) and 5xx answers are
        tried again after a backoff; a 4xx is the answer, and so is anything after the headers arrived.
        """
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=wait_exponential_jitter(initial=self.config.retry_backoff_seconds, max=MAX_BACKOFF_SECONDS),
            retry=retry_if_exception_type((aiohttp.ClientConnectionError, _ServerFailure)),
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                async with asyncio.timeout(self.first_byte_seconds):
                    response = await self.session().post(url or self.completions_url, json=body)
                if response.status >= 500:
                    message, _, _ = await _upstream_error(response)
                    response.release()
                    raise _ServerFailure(response.status, message)
                return response
        raise AssertionError("AsyncRetrying returns or raises")  # pragma: no cover

    def _log_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome.exception() if state.outcome is not None else None
        logger.info(
            "model %r: upstream at %s: %s; retrying (attempt %d of %d)", self.config.model_id, self.config.base_url,
            outcome, state.attempt_number + 1, self.config.max_retries + 1,
        )

    def body(self, prepared: RemoteRequest) -> dict[str, Any]:
        return request_body(prepared.request, upstream_model=self.config.upstream_model, dialect=self.config.dialect)


async def _refusal(response: aiohttp.ClientResponse, config: RemoteModelConfig) -> tuple[GalerneError, str]:
    """What a client is told when the upstream answers with an error status, and the line for the log.

    A 4xx about the request (bad parameters, too long, the upstream's own rate limit) is the client's to
    fix, so it is passed on with the upstream's status and message. 401, 403, 404 and 407 are about the
    gateway's own set-up (its upstream key, `upstream_model` or `base_url`): the client sees a 502 naming
    the model, the operator finds the upstream's words in the log. (5xx never get here: `open` raises them.)
    """
    message, code, param = await _upstream_error(response)
    detail = f"answered HTTP {response.status}: {message}"
    model = config.model_id
    if response.status == 408:
        return UpstreamTimeoutError(f"model {model!r}: its upstream timed out; retry later{_SEE_LOG}"), detail
    if 400 <= response.status < 500 and response.status not in _GATEWAY_SETUP_STATUSES:
        retry_after = response.headers.get("Retry-After", "")
        return UpstreamRejectedError(
            f"the upstream of model {model!r} refused the request: {message}",
            status=response.status,
            code=code,
            param=param,
            retry_after=int(retry_after) if retry_after.isdigit() and response.status == 429 else None,
        ), detail
    return UpstreamError(f"model {model!r} got no valid answer from its upstream; retry later, "
                         f"or ask the operator{_SEE_LOG}"), detail


async def _upstream_error(response: aiohttp.ClientResponse) -> tuple[str, str | None, str | None]:
    """The upstream's error message, code and param, short; never the request headers (they hold the key)."""
    raw = (await response.content.read(4096)).decode(errors="replace")
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return raw[:300], None, None
    error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    if not isinstance(error, dict):
        return str(error)[:300], None, None
    message = error.get("message") or error.get("detail") or raw
    return str(message)[:300], _short_text(error.get("code")), _short_text(error.get("param"))


def _short_text(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable() else None
