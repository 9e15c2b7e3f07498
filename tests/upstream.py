"""A small OpenAI-shaped upstream on loopback, for testing the remote engine over real HTTP.

It answers `POST /v1/chat/completions` with the words of `reply`, streamed with usage in the last chunk
when asked to stream, whole otherwise, and records the requests and headers it received.
`words_per_second` slows it to test cancellation. It fails in each way an upstream can:
`fail_with` answers that HTTP status (with `fail_message`, and `Retry-After: retry_after` when set);
`fail_times` limits that to the next N requests (then it answers again: retries);
`delay_seconds` waits before answering (a timeout); `fault` answers 200 with something broken:
``"garbage"`` (not JSON), ``"bad_chunk"`` (JSON of the wrong shape: content that is a number, no choices)
or ``"cut"`` (the connection drops after the first word). `GET /v1/models` (the router's health check)
answers 200, or the `fail_with` status when that is a 5xx.

`python -m tests.upstream --port N [--words-per-second W] [--reply TEXT]` runs one as a process of its
own, for tests that kill an upstream (SIGKILL) under load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port


@dataclass
class Upstream:
    reply: str = "Hello from upstream ."
    fail_with: int | None = None
    fail_message: str = "upstream is unhappy"
    fail_code: str | None = None
    fail_times: int | None = None
    retry_after: str | None = None
    delay_seconds: float = 0.0
    fault: Literal["garbage", "bad_chunk", "cut"] | None = None
    words_per_second: float | None = None
    finish_reason: str = "stop"
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    num_open_streams: int = 0
    base_url: str = ""

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.received.append(body)
        self.headers.append(dict(request.headers))
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.fail_with is not None and self.fail_times != 0:
            if self.fail_times is not None:
                self.fail_times -= 1
            error = {"message": self.fail_message, "code": self.fail_code, "param": None}
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return JSONResponse({"error": error}, status_code=self.fail_with, headers=headers)
        words = self.reply.split(" ")[: body.get("max_tokens") or None]
        if self.fault is not None:
            return self._broken(words, is_streamed=bool(body.get("stream")))
        if not body.get("stream"):
            usage = {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11 + len(words)}
            message = {"role": "assistant", "content": " ".join(words)}
            choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
            return JSONResponse({"object": "chat.completion", "model": "up", "choices": [choice], "usage": usage})
        return StreamingResponse(self._chunks(words, body), media_type="text/event-stream")

    async def models(self, request: Request) -> Response:
        if self.fail_with is not None and self.fail_with >= 500 and self.fail_times != 0:
            return JSONResponse({"error": {"message": self.fail_message}}, status_code=self.fail_with)
        return JSONResponse({"object": "list", "data": [{"id": "up", "object": "model"}]})

    async def _chunks(self, words: list[str], body: dict[str, Any]) -> AsyncIterator[bytes]:
        self.num_open_streams += 1
        try:
            for index, word in enumerate(words):
                if self.words_per_second:
                    await asyncio.sleep(1 / self.words_per_second)
                text = word if index == 0 else " " + word
                yield _event({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
            usage = {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11 + len(words)}
            yield _event({"choices": [{"index": 0, "delta": {}, "finish_reason": self.finish_reason}], "usage": usage})
            yield b"data: [DONE]\n\n"
        finally:
            self.num_open_streams -= 1


    def _broken(self, words: list[str], *, is_streamed: bool) -> Response:
        first = _event({"choices": [{"index": 0, "delta": {"content": words[0]}, "finish_reason": None}]})
        if self.fault == "garbage":
            return Response(b"data: {not json\n\n" if is_streamed else b"<html>bad gateway</html>", status_code=200)
        if self.fault == "bad_chunk" and is_streamed:
            wrong = _event({"choices": [{"index": 0, "delta": {"content": 5}, "finish_reason": "stop"}]})
            return StreamingResponse(iter([first, wrong, b"data: [DONE]\n\n"]), media_type="text/event-stream")
        if self.fault == "bad_chunk":
            return JSONResponse({"object": "chat.completion", "choices": []})

        async def cut() -> AsyncIterator[bytes]:
            yield first if is_streamed else b'{"object": "chat.completion", "choi'
            await asyncio.sleep(0.05)
            raise ConnectionAbortedError("the upstream drops the connection (on purpose, for a test)")

        return StreamingResponse(cut(), media_type="text/event-stream" if is_streamed else "application/json")


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps({"object": "chat.completion.chunk", "model": "up", **chunk}).encode() + b"\n\n"


def _app(upstream: Upstream) -> Starlette:
    return Starlette(routes=[
        Route("/v1/chat/completions", upstream.chat, methods=["POST"]), Route("/v1/models", upstream.models),
    ])


@contextmanager
def running_upstream(upstream: Upstream | None = None) -> Iterator[Upstream]:
    upstream = upstream or Upstream()
    app = _app(upstream)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    upstream.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield upstream
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def upstream_process(*, words_per_second: float | None = None, reply: str | None = None) -> Iterator[UpstreamProcess]:
    """An upstream in a process of its own (killable); waits until it answers."""
    port = free_port()
    command = [sys.executable, "-m", "tests.upstream", "--port", str(port)]
    if words_per_second:
        command += ["--words-per-second", str(words_per_second)]
    if reply:
        command += ["--reply", reply]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    running = UpstreamProcess(f"http://127.0.0.1:{port}/v1", process)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{running.base_url}/models", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("the upstream process did not start")
        yield running
    finally:
        process.kill()
        process.wait(timeout=10)


@dataclass
class UpstreamProcess:
    base_url: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--words-per-second", type=float, default=None)
    parser.add_argument("--reply", default=Upstream.reply)
    arguments = parser.parse_args()
    served = Upstream(reply=arguments.reply, words_per_second=arguments.words_per_second)
    uvicorn.run(_app(served), host="127.0.0.1", port=arguments.port, log_level="warning")
