"""Server-sent events as la Plateforme and OpenAI send them: `data: {json}` lines, then `data: [DONE]`.

Every stream ends the same way, whatever happens once its 200 is sent: a last chunk (or an error event),
then `data: [DONE]`. A client's disconnect is the only exception: nobody is left to read.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from pydantic import BaseModel

from galerne.api.errors import UNEXPECTED_ERROR_MESSAGE, error_body_for
from galerne.errors import GalerneError

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def encode_events(chunks: AsyncIterator[BaseModel]) -> AsyncIterator[bytes]:
    """Serialise chunks; an error after the stream started becomes a last error event, then [DONE].

    An unexpected exception (a bug) is logged here, once, with its traceback; the client gets the same
    generic message as a non-streamed 500.
    """
    try:
        async for chunk in chunks:
            yield b"data: " + chunk.model_dump_json().encode() + b"\n\n"
    except GalerneError as exc:
        yield _event(exc)
    except Exception:
        logger.exception("a stream failed unexpectedly")
        yield _event(GalerneError(UNEXPECTED_ERROR_MESSAGE))
    yield b"data: [DONE]\n\n"


def _event(error: GalerneError) -> bytes:
    return b"data: " + error_body_for(error).model_dump_json().encode() + b"\n\n"
