"""`POST /v1/chat/completions`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from galerne.api.deps import PrincipalDep, RuntimeDep
from galerne.api.errors import error_responses
from galerne.api.sse import SSE_HEADERS, encode_events, event_stream_content
from galerne.protocol.chat import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

logger = logging.getLogger(__name__)
router = APIRouter(responses=error_responses(400, 401, 404, 413, 422, 429, 500, 502, 503, 504))

T = TypeVar("T")


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
    is_settled_by_response = False
    try:
        if body.stream:
            # Returns at the engine's first event, so a generation refused at once keeps its own status.
            chunks = await _unless_client_leaves(request, runtime.chat.stream(run))
            if chunks is None:
                return _client_left(request)
            is_settled_by_response = True
            # Starlette cancels this generator when the client disconnects, which cancels the generation.
            return SettledStreamingResponse(
                encode_events(chunks),
                media_type="text/event-stream",
                headers={**SSE_HEADERS, **run.limit_headers},
                on_close=lambda: runtime.chat.abandon(run),
            )
        reply = await _unless_client_leaves(request, runtime.chat.complete(run))
        if reply is None:
            return _client_left(request)
        # Serialised here, once: FastAPI would validate the finished reply against its own schema again.
        return Response(reply.model_dump_json(), media_type="application/json", headers=run.limit_headers)
    finally:
        if not is_settled_by_response:
            runtime.chat.abandon(run)  # a no-op when the reply settled it


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
    """Await `work`, cancelled at once if the client disconnects (which frees its slot); None when it did.

    The client leaving is a normal event: it must not surface as a CancelledError, which the ASGI server
    would log as a crash with a full traceback. A cancellation of this request itself (shutdown) still
    propagates.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_cancel_on_disconnect(request, task))
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and watcher.done() and not (current is not None and current.cancelling()):
            return None
        raise
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(request: Request, task: asyncio.Future[Any]) -> None:
    """A request whose client leaves before its reply starts stops generating at once and frees its slot."""
    while not task.done():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return


def _client_left(request: Request) -> Response:
    """Nobody reads this answer; one log line says what happened (the path only: a query may hold secrets)."""
    logger.info("%s %s: the client left before its reply began; generation cancelled", request.method, request.url.path)
    return Response(status_code=499)
