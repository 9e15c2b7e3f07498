"""Answering a started generation, whole or as server-sent events, for every generating route.

A client that leaves before its reply begins cancels its generation at once, and that is no error; a
run is settled exactly once, by the reply when it is read to its end, by `abandon` otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel

from galerne.api.sse import SSE_HEADERS, encode_events
from galerne.settled_response import SettledStreamingResponse

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def answer(
    request: Request,
    *,
    is_streamed: bool,
    stream: Callable[[], Awaitable[AsyncIterator[BaseModel]]],
    complete: Callable[[], Awaitable[BaseModel]],
    abandon: Callable[[], None],
    headers: dict[str, str],
) -> Response:
    """The reply of a submitted run: `complete()` serialised once, or `stream()` as server-sent events."""
    is_settled_by_response = False
    try:
        if is_streamed:
            # Returns at the engine's first event, so a generation refused at once keeps its own status.
            chunks = await unless_client_leaves(request, stream())
            if chunks is None:
                return client_left(request)
            is_settled_by_response = True
            # Starlette cancels this generator when the client disconnects, which cancels the generation.
            return SettledStreamingResponse(
                encode_events(chunks),
                media_type="text/event-stream",
                headers={**SSE_HEADERS, **headers},
                on_close=abandon,
            )
        reply = await unless_client_leaves(request, complete())
        if reply is None:
            return client_left(request)
        # Serialised here, once: FastAPI would validate the finished reply against its own schema again.
        return Response(reply.model_dump_json(), media_type="application/json", headers=headers)
    finally:
        if not is_settled_by_response:
            abandon()  # a no-op when the reply settled it


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
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


def client_left(request: Request) -> Response:
    """Nobody reads this answer; one log line says what happened (the path only: a query may hold secrets)."""
    logger.info("%s %s: the client left before its reply began; generation cancelled", request.method, request.url.path)
    return Response(status_code=499)
