"""`POST /v1/chat/completions`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from galerne.api.deps import PrincipalDep, RuntimeDep
from galerne.api.errors import error_responses
from galerne.api.sse import SSE_HEADERS, encode_events, event_stream_content
from galerne.protocol.chat import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

router = APIRouter(responses=error_responses(400, 401, 403, 404, 413, 422, 429, 503))


class SettledStreamingResponse(StreamingResponse):
    """Runs `on_close` however the response ends — even when the client left before the first byte,
    which never starts the body generator and so never runs its `finally`."""

    def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    response_model_exclude_none=False,
    responses={200: {"content": event_stream_content(ChatCompletionChunk)}},  # with `stream: true`
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, principal: PrincipalDep, runtime: RuntimeDep
) -> Any:
    """Chat with a model; `stream: true` answers with server-sent events."""
    run = await runtime.chat.start(body, principal)
    if body.stream:
        # Starlette cancels this generator when the client disconnects, which cancels the generation.
        return SettledStreamingResponse(
            encode_events(runtime.chat.stream(run)),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **run.limit_headers},
            on_close=lambda: runtime.chat.abandon(run),
        )
    completion = asyncio.ensure_future(runtime.chat.complete(run))
    watcher = asyncio.ensure_future(_cancel_on_disconnect(request, completion))
    try:
        # Serialised here, once: FastAPI would validate the finished reply against its own schema again.
        reply = await completion
        return Response(reply.model_dump_json(), media_type="application/json", headers=run.limit_headers)
    finally:
        watcher.cancel()
        runtime.chat.abandon(run)  # a no-op when `complete` settled it


async def _cancel_on_disconnect(request: Request, task: asyncio.Future[Any]) -> None:
    """A non-streamed request whose client leaves stops generating at once and frees its slot."""
    while not task.done():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return
