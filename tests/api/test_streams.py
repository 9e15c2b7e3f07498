"""How streams and slow requests end: always a last chunk or an error event, then `[DONE]`; a client
that leaves is one log line, never a traceback. Real servers, a real upstream, real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel

from galerne.api.sse import encode_events
from galerne.errors import UpstreamError
from tests.conftest import RunningServer, start_server, stop_server
from tests.faulty_server import PLANTED
from tests.upstream import Upstream, running_upstream

HELLO = [{"role": "user", "content": "Say hello."}]


class Piece(BaseModel):
    text: str


def remote_catalogue(home: Path, upstream: Upstream) -> dict[str, str]:
    config = home / "catalogue.toml"
    config.write_text(f'[[models]]\nid = "far"\nengine = "remote"\nbase_url = "{upstream.base_url}"\n')
    return {"GALERNE_CONFIG": str(config)}


def data_lines(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


async def encoded(*pieces: str, then: Exception) -> list[str]:
    async def chunks() -> AsyncIterator[BaseModel]:
        for piece in pieces:
            yield Piece(text=piece)
        raise then

    return [part.decode() async for part in encode_events(chunks())]


async def test_an_unexpected_exception_ends_the_stream_with_an_error_event_then_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        parts = await encoded("a", then=ZeroDivisionError("a bug"))
    assert json.loads(parts[0][6:]) == {"text": "a"}
    error = json.loads(parts[1][6:])
    assert error["object"] == "error" and error["type"] == "server_error" and "a bug" not in error["message"]
    assert parts[2] == "data: [DONE]\n\n" and len(parts) == 3
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None


async def test_a_galerne_error_in_a_stream_keeps_its_message_and_is_not_logged_as_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        parts = await encoded(then=UpstreamError("model 'far' got no valid answer"))
    assert json.loads(parts[0][6:])["code"] == "upstream_error" and parts[1] == "data: [DONE]\n\n"
    assert not caplog.records


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as running:
        yield running


@pytest.fixture(scope="module")
def faulty_server(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("faulty")
    running = start_server(home, env=remote_catalogue(home, upstream), module="tests.faulty_server")
    yield running
    stop_server(running)


def test_a_bug_inside_a_stream_is_an_error_event_then_done_and_one_traceback_in_the_log(
    faulty_server: RunningServer,
) -> None:
    num_before = faulty_server.log().count(f"RuntimeError: {PLANTED}")
    reply = faulty_server.post("/v1/chat/completions", json={"model": "far", "messages": HELLO, "stream": True})
    lines = data_lines(reply.text)
    assert reply.status_code == 200 and lines[-1] == "[DONE]", reply.text
    error = json.loads(lines[-2])
    assert error["object"] == "error" and error["type"] == "server_error" and "log" in error["message"]
    assert PLANTED not in reply.text
    log = wait_for_log(faulty_server, f"RuntimeError: {PLANTED}", num_before + 1)
    assert "Exception in ASGI application" not in log


def test_a_bug_in_a_whole_reply_is_a_500_and_one_traceback_in_the_log(faulty_server: RunningServer) -> None:
    num_before = faulty_server.log().count(f"RuntimeError: {PLANTED}")
    reply = faulty_server.post("/v1/chat/completions", json={"model": "far", "messages": HELLO})
    assert reply.status_code == 500 and reply.json()["type"] == "server_error" and PLANTED not in reply.text
    time.sleep(0.5)  # a second traceback, if any, would be written right after the response
    log = wait_for_log(faulty_server, f"RuntimeError: {PLANTED}", num_before + 1)
    assert "Exception in ASGI application" not in log


@pytest.fixture(scope="module")
def gateway(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("streams")
    running = start_server(home, env=remote_catalogue(home, upstream))
    yield running
    stop_server(running)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_gives_up_before_the_reply_is_one_log_line(
    upstream: Upstream, gateway: RunningServer, stream: bool
) -> None:
    num_before = gateway.log().count("the client left before its reply began")
    upstream.delay_seconds = 3.0
    try:
        with pytest.raises(httpx.ReadTimeout):
            gateway.post("/v1/chat/completions", json={"model": "far", "messages": HELLO, "stream": stream}, timeout=1)
        log = wait_for_log(gateway, "the client left before its reply began", num_before + 1)
    finally:
        upstream.delay_seconds = 0.0
    assert "Traceback" not in log and "CancelledError" not in log and "Exception in ASGI" not in log, log


async def test_a_client_that_leaves_mid_stream_leaves_no_traceback(upstream: Upstream, gateway: RunningServer) -> None:
    server = gateway
    upstream.reply, upstream.words_per_second = " ".join(["word"] * 100), 20
    try:
        async with server.client(timeout=30) as client:
            body = {"model": "far", "messages": HELLO, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for _ in response.aiter_lines():
                    break
        for _ in range(100):
            if upstream.num_open_streams == 0:
                break
            await asyncio.sleep(0.05)
        assert upstream.num_open_streams == 0  # the upstream call was cancelled with the client
    finally:
        upstream.reply, upstream.words_per_second = Upstream.reply, None
    assert "Traceback" not in server.log() and "Exception in ASGI" not in server.log()


def wait_for_log(server: RunningServer, text: str, count: int) -> str:
    for _ in range(100):
        log = server.log()
        if log.count(text) == count:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} is not in the log {count} times:\n{server.log()}")
