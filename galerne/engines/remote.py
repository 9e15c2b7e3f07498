"""The remote engine: forwards validated requests to an OpenAI-compatible upstream (la Plateforme, Azure,
vLLM, another Galerne) and streams its reply back as engine events.

Galerne stays the gateway — keys, limits, metering — while the model runs elsewhere. The upstream key is
read from the environment at start-up and never appears in errors or logs. This engine offers chat only:
structured outputs and tools are refused by the services for remote models (passing them through is
left to the routing work).

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
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from galerne.engines.base import EngineCapabilities, EngineStats, PreparedRequest
from galerne.errors import ContextLengthExceededError, EngineOverloadedError
from galerne.inference.types import FinishReason, GenerationEvent, GenerationRequest

logger = logging.getLogger(__name__)

# Without a tokenizer for the upstream model, prompts are estimated at 4 characters a token plus a few
# tokens of chat markup per message. The estimate only sizes the rate-limit reservation; usage records
# take the upstream's own counts.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
_FINISH_REASONS = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "tool_calls": FinishReason.STOP}


@dataclass(frozen=True, slots=True)
class RemoteModelConfig:
    base_url: str
    upstream_model: str
    api_key: str | None = None
    context_length: int = 32768
    max_concurrent_requests: int = 64
    timeout_seconds: float = 600.0
    model_id: str = "remote"


@dataclass(frozen=True, slots=True)
class RemoteRequest:
    request: GenerationRequest
    prompt_tokens: int
    max_new_tokens: int

    @property
    def num_choices(self) -> int:
        return self.request.num_choices


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
        self._engine.num_active += 1
        body = self._engine.body(self._prepared)
        try:
            async with self._engine.session().post(self._engine.completions_url, json=body) as response:
                if response.status != 200:
                    yield self._failure(f"answered HTTP {response.status}: {await _error_text(response)}")
                    return
                events = self._streamed_events(response) if body["stream"] else self._whole_reply(response)
                async for event in events:
                    yield event
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            yield self._failure(f"failed: {type(exc).__name__}")
        finally:
            self._engine.num_active -= 1

    async def _streamed_events(self, response: aiohttp.ClientResponse) -> AsyncIterator[GenerationEvent]:
        finish: FinishReason | None = None
        async for raw in response.content:  # one SSE line at a time
            if self._is_cancelled:
                return
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                continue  # read to the end, so the connection goes back to the pool
            chunk = json.loads(data)
            usage = chunk.get("usage")
            if usage:
                self._take_usage(usage)
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content") or ""
                if text:
                    self.completion_tokens += 0 if usage else 1
                    yield GenerationEvent(text, self.prompt_tokens, self.completion_tokens)
                if choice.get("finish_reason"):
                    finish = _FINISH_REASONS.get(choice["finish_reason"], FinishReason.STOP)
        if finish is None:
            yield self._failure("ended its stream without a finish_reason")
            return
        yield GenerationEvent("", self.prompt_tokens, self.completion_tokens, finish)

    async def _whole_reply(self, response: aiohttp.ClientResponse) -> AsyncIterator[GenerationEvent]:
        """A client that does not stream gets the upstream's reply in one piece: one request, one parse."""
        reply = json.loads(await response.read())
        self._take_usage(reply.get("usage") or {})
        choice = reply["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
        finish = _FINISH_REASONS.get(choice.get("finish_reason") or "stop", FinishReason.STOP)
        if text:
            yield GenerationEvent(text, self.prompt_tokens, self.completion_tokens)
        yield GenerationEvent("", self.prompt_tokens, self.completion_tokens, finish)

    def _take_usage(self, usage: dict[str, Any]) -> None:
        self.prompt_tokens = int(usage.get("prompt_tokens", self.prompt_tokens))
        self.completion_tokens = int(usage.get("completion_tokens", self.completion_tokens))

    def _failure(self, what: str) -> GenerationEvent:
        message = f"upstream model {self._engine.config.upstream_model!r} {what}"
        logger.warning("%s", message)
        return GenerationEvent("", self.prompt_tokens, self.completion_tokens, FinishReason.ERROR, message)


class RemoteEngine:
    capabilities = EngineCapabilities(supports_chat=True, supports_tools=False, supports_json=False)

    def __init__(self, config: RemoteModelConfig) -> None:
        self.config = config
        self.context_length = config.context_length
        self.num_active = 0
        self.completions_url = config.base_url.rstrip("/") + "/chat/completions"
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
        """One upstream request per choice, each with its own seed (seed + index), like the embedded engine."""
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

    def stats(self) -> EngineStats:
        # Healthy while it runs: an unreachable upstream fails its own requests, it does not stop this engine.
        return EngineStats(
            num_queued=0, num_active=self.num_active, num_slots=self.config.max_concurrent_requests, is_healthy=True
        )

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
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds, sock_connect=10.0),
                connector=aiohttp.TCPConnector(limit=self.config.max_concurrent_requests),
            )
        return self._session

    def body(self, prepared: RemoteRequest) -> dict[str, Any]:
        """The upstream request, in OpenAI's field names (which la Plateforme also accepts)."""
        request = prepared.request
        messages: list[dict[str, Any]] = []
        for message in request.messages:
            entry: dict[str, Any] = {"role": message.role.value, "content": message.content}
            if message.name:
                entry["name"] = message.name
            if message.tool_call_id:
                entry["tool_call_id"] = message.tool_call_id
            if message.tool_calls:
                entry["tool_calls"] = [
                    {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                    for call in message.tool_calls
                ]
            messages.append(entry)
        if request.assistant_prefix is not None:
            messages.append({"role": "assistant", "content": request.assistant_prefix, "prefix": True})
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.config.upstream_model,
            "messages": messages,
            "stream": request.is_streamed,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": prepared.max_new_tokens,
        }
        if request.is_streamed:
            body["stream_options"] = {"include_usage": True}
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.presence_penalty:
            body["presence_penalty"] = sampling.presence_penalty
        if sampling.frequency_penalty:
            body["frequency_penalty"] = sampling.frequency_penalty
        return body


async def _error_text(response: aiohttp.ClientResponse) -> str:
    """The upstream's error message, short; never the request headers (they hold the key)."""
    raw = (await response.content.read(500)).decode(errors="replace")
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        message = error.get("message") if isinstance(error, dict) else error
        return str(message or raw)[:300]
    return raw[:300]
