"""Server-sent events as la Plateforme and OpenAI send them: `data: {json}` lines, then `data: [DONE]`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel

from galerne.api.errors import error_body_for
from galerne.errors import GalerneError

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def encode_events(chunks: AsyncIterator[BaseModel]) -> AsyncIterator[bytes]:
    """Serialise chunks; an error after the stream started becomes a last error event, then [DONE]."""
    try:
        async for chunk in chunks:
            yield b"data: " + chunk.model_dump_json().encode() + b"\n\n"
    except GalerneError as exc:
        yield b"data: " + error_body_for(exc).model_dump_json().encode() + b"\n\n"
    yield b"data: [DONE]\n\n"
