"""A small OpenAI-shaped upstream on loopback, for testing the remote engine over real HTTP.

It answers `POST /v1/chat/completions` with the words of `reply`, streamed with usage in the last chunk
when asked to stream, whole otherwise, and records the requests and headers it received.
`fail_with` makes it answer that HTTP status instead; `words_per_second` slows it to test cancellation.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

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
        if self.fail_with is not None:
            return JSONResponse({"error": {"message": "upstream is unhappy"}}, status_code=self.fail_with)
        words = self.reply.split(" ")[: body.get("max_tokens") or None]
        if not body.get("stream"):
            usage = {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11 + len(words)}
            message = {"role": "assistant", "content": " ".join(words)}
            choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
            return JSONResponse({"object": "chat.completion", "model": "up", "choices": [choice], "usage": usage})
        return StreamingResponse(self._chunks(words, body), media_type="text/event-stream")

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


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps({"object": "chat.completion.chunk", "model": "up", **chunk}).encode() + b"\n\n"


@contextmanager
def running_upstream(upstream: Upstream | None = None) -> Iterator[Upstream]:
    upstream = upstream or Upstream()
    app = Starlette(routes=[Route("/v1/chat/completions", upstream.chat, methods=["POST"])])
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
