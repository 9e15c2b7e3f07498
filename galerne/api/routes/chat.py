"""`POST /v1/chat/completions`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from galerne.api.deps import RuntimeDep
from galerne.api.sse import SSE_HEADERS, encode_events
from galerne.protocol.chat import ChatCompletionRequest, ChatCompletionResponse

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, response_model_exclude_none=False)
async def chat_completions(body: ChatCompletionRequest, request: Request, runtime: RuntimeDep) -> Any:
    """Chat with a model; `stream: true` answers with server-sent events."""
    run = runtime.chat.start(body)
    if body.stream:
        # Starlette cancels this generator when the client disconnects, which cancels the generation.
        return StreamingResponse(
            encode_events(runtime.chat.stream(run)), media_type="text/event-stream", headers=SSE_HEADERS
        )
    completion = asyncio.ensure_future(runtime.chat.complete(run))
    watcher = asyncio.ensure_future(_cancel_on_disconnect(request, completion))
    try:
        return await completion
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(request: Request, task: asyncio.Future[Any]) -> None:
    """A non-streamed request whose client leaves stops generating at once and frees its slot."""
    while not task.done():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return
