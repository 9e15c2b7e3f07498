"""The remote engine against a real OpenAI-shaped upstream on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from galerne.engines.remote import RemoteEngine, RemoteModelConfig
from galerne.errors import ContextLengthExceededError
from galerne.inference.types import ChatMessage, FinishReason, GenerationEvent, GenerationRequest, Role, SamplingParams
from tests.upstream import Upstream, running_upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with running_upstream() as running:
        yield running


def request(text: str = "Hi", **sampling: object) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(Role.SYSTEM, "Be brief."), ChatMessage(Role.USER, text)),
        sampling=SamplingParams(**sampling),  # type: ignore[arg-type]
    )


async def collect(engine: RemoteEngine, generation_request: GenerationRequest) -> list[GenerationEvent]:
    [generation] = engine.submit(await engine.prepare(generation_request))
    return [event async for event in generation.events()]


async def test_streams_text_and_takes_the_upstreams_usage(upstream: Upstream) -> None:
    engine = RemoteEngine(RemoteModelConfig(base_url=upstream.base_url, upstream_model="up", api_key="sk-up"))
    events = await collect(engine, request(temperature=0.3, max_tokens=50, stop=("END",), seed=7))
    assert "".join(e.text for e in events) == "Hello from upstream ."
    last = events[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == (FinishReason.STOP, 11, 4)
    sent = upstream.received[0]
    assert sent["model"] == "up" and sent["stream"] is True and sent["max_tokens"] == 50
    assert (sent["temperature"], sent["stop"], sent["seed"]) == (0.3, ["END"], 7)
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert upstream.headers[0]["authorization"] == "Bearer sk-up"
    engine.close()


async def test_a_client_that_does_not_stream_gets_the_reply_whole(upstream: Upstream) -> None:
    engine = RemoteEngine(RemoteModelConfig(base_url=upstream.base_url, upstream_model="up"))
    whole = GenerationRequest(messages=request().messages, is_streamed=False)
    events = await collect(engine, whole)
    assert [e.text for e in events] == ["Hello from upstream .", ""]
    assert (events[-1].finish_reason, events[-1].prompt_tokens, events[-1].completion_tokens) == (
        FinishReason.STOP, 11, 4
    )
    assert upstream.received[0]["stream"] is False and "stream_options" not in upstream.received[0]


async def test_length_is_passed_on(upstream: Upstream) -> None:
    upstream.finish_reason = "length"
    engine = RemoteEngine(RemoteModelConfig(base_url=upstream.base_url, upstream_model="up"))
    events = await collect(engine, request(max_tokens=2))
    assert events[-1].finish_reason is FinishReason.LENGTH and events[-1].completion_tokens == 2
    assert "authorization" not in upstream.headers[0]


async def test_an_upstream_error_is_an_error_event_without_the_key(upstream: Upstream) -> None:
    upstream.fail_with = 500
    engine = RemoteEngine(RemoteModelConfig(base_url=upstream.base_url, upstream_model="up", api_key="sk-secret"))
    events = await collect(engine, request())
    assert events[-1].finish_reason is FinishReason.ERROR
    assert "500" in (events[-1].error or "") and "upstream is unhappy" in (events[-1].error or "")
    assert "sk-secret" not in (events[-1].error or "")


async def test_an_unreachable_upstream_is_an_error_event() -> None:
    engine = RemoteEngine(RemoteModelConfig(base_url="http://127.0.0.1:9/v1", upstream_model="up"))
    events = await collect(engine, request())
    assert events[-1].finish_reason is FinishReason.ERROR and "Connect" in (events[-1].error or "")


async def test_leaving_early_closes_the_upstream_stream(upstream: Upstream) -> None:
    upstream.reply = " ".join(["word"] * 200)
    upstream.words_per_second = 50
    engine = RemoteEngine(RemoteModelConfig(base_url=upstream.base_url, upstream_model="up"))
    [generation] = engine.submit(await engine.prepare(request()))
    events = generation.events()
    await anext(events)
    assert upstream.num_open_streams == 1
    await events.aclose()
    for _ in range(100):
        if upstream.num_open_streams == 0:
            break
        await asyncio.sleep(0.02)
    assert upstream.num_open_streams == 0 and engine.num_active == 0


async def test_prepare_estimates_the_prompt_and_checks_the_context() -> None:
    engine = RemoteEngine(RemoteModelConfig(base_url="http://127.0.0.1:9/v1", upstream_model="up", context_length=100))
    prepared = await engine.prepare(request("x" * 40))
    assert prepared.prompt_tokens == 3 + 4 + 10 + 4  # "Be brief." and the 40 characters, plus markup
    assert prepared.max_new_tokens == 100 - prepared.prompt_tokens
    with pytest.raises(ContextLengthExceededError):
        await engine.prepare(request("x" * 40, max_tokens=90))
    with pytest.raises(ContextLengthExceededError):
        await engine.prepare(request("x" * 400))
