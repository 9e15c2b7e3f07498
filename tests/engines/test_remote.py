"""The remote engine against a real OpenAI-shaped upstream on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from galerne.engines.remote import RemoteEngine, RemoteModelConfig
from galerne.errors import ContextLengthExceededError, UpstreamError, UpstreamRejectedError, UpstreamTimeoutError
from galerne.inference.types import ChatMessage, FinishReason, GenerationEvent, GenerationRequest, Role, SamplingParams
from tests.conftest import free_port
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


async def test_an_upstream_5xx_is_a_502_naming_the_model_and_the_details_go_to_the_log(
    upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.fail_with = 500
    engine = RemoteEngine(
        RemoteModelConfig(base_url=upstream.base_url, upstream_model="up", api_key="sk-secret", model_id="far")
    )
    events = await collect(engine, request())
    failure = events[-1].failure
    assert events[-1].finish_reason is FinishReason.ERROR and isinstance(failure, UpstreamError)
    assert (failure.status, failure.code) == (502, "upstream_error") and "'far'" in failure.message
    assert "unhappy" not in failure.message and "127.0.0.1" not in failure.message
    assert "HTTP 500: upstream is unhappy" in caplog.text and "sk-secret" not in caplog.text


async def test_an_unreachable_upstream_is_a_502() -> None:
    engine = RemoteEngine(RemoteModelConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", upstream_model="up"))
    events = await collect(engine, request())
    assert isinstance(events[-1].failure, UpstreamError) and events[-1].failure.status == 502


@pytest.mark.parametrize("is_streamed", [True, False])
@pytest.mark.parametrize("fault", ["garbage", "bad_chunk", "cut"])
async def test_a_malformed_or_cut_answer_is_a_502(upstream: Upstream, fault: str, is_streamed: bool) -> None:
    upstream.fault = fault  # type: ignore[assignment]
    engine = RemoteEngine(RemoteModelConfig(base_url=upstream.base_url, upstream_model="up"))
    events = await collect(engine, replace(request(), is_streamed=is_streamed))
    assert events[-1].finish_reason is FinishReason.ERROR
    assert isinstance(events[-1].failure, UpstreamError) and events[-1].failure.status == 502


async def test_a_silent_upstream_is_a_504(upstream: Upstream) -> None:
    upstream.delay_seconds = 2
    engine = RemoteEngine(RemoteModelConfig(base_url=upstream.base_url, upstream_model="up", timeout_seconds=0.3))
    events = await collect(engine, request())
    failure = events[-1].failure
    assert isinstance(failure, UpstreamTimeoutError) and (failure.status, failure.code) == (504, "upstream_timeout")


@pytest.mark.parametrize(("status", "passed_on"), [(400, 400), (422, 422), (429, 429), (401, 502), (404, 502)])
async def test_upstream_4xx_about_the_request_pass_on_and_set_up_faults_do_not(
    upstream: Upstream, status: int, passed_on: int
) -> None:
    upstream.fail_with, upstream.fail_message, upstream.fail_code, upstream.retry_after = (
        status, "max_tokens is too large", "too_large", "7"
    )
    engine = RemoteEngine(RemoteModelConfig(base_url=upstream.base_url, upstream_model="up", model_id="far"))
    failure = (await collect(engine, request()))[-1].failure
    assert failure is not None and failure.status == passed_on
    if passed_on == status:
        assert isinstance(failure, UpstreamRejectedError) and failure.code == "too_large"
        assert "max_tokens is too large" in failure.message and "'far'" in failure.message
        assert failure.headers() == ({"Retry-After": "7"} if status == 429 else {})
    else:
        assert isinstance(failure, UpstreamError) and "max_tokens" not in failure.message


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


async def test_an_upstream_that_never_accepts_the_connection_is_a_504_after_the_connect_timeout() -> None:
    """A listening socket whose backlog is full: the kernel drops further SYNs, so connecting hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        try:
            config = RemoteModelConfig(base_url=f"http://127.0.0.1:{port}/v1", upstream_model="up",
                                       connect_timeout_seconds=0.3, max_retries=0)
            engine = RemoteEngine(config)
            started = time.monotonic()
            events = await collect(engine, request())
            failure = events[-1].failure
            assert isinstance(failure, UpstreamTimeoutError) and failure.status == 504
            assert 0.25 < time.monotonic() - started < 3
            engine.close()
        finally:
            for filler in fillers:
                filler.close()


async def test_5xx_are_retried_and_4xx_are_not(upstream: Upstream) -> None:
    upstream.fail_with, upstream.fail_times = 502, 2
    engine = RemoteEngine(RemoteModelConfig(base_url=upstream.base_url, upstream_model="up", max_retries=2))
    events = await collect(engine, request())
    assert events[-1].finish_reason is FinishReason.STOP and len(upstream.received) == 3
    upstream.fail_with, upstream.fail_times = 400, 1
    events = await collect(engine, request())
    assert isinstance(events[-1].failure, UpstreamRejectedError) and len(upstream.received) == 4
    engine.close()
