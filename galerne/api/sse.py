"""Server-sent events as la Plateforme and OpenAI send them: `data: {json}` lines, then `data: [DONE]`.

Every stream ends the same way, whatever happens once its 200 is sent: a last chunk (or an error event),
then `data: [DONE]`. A client's disconnect is the only exception: nobody is left to read.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, TypeAdapter

from galerne.api.errors import UNEXPECTED_ERROR_MESSAGE, error_body_for
from galerne.errors import GalerneError
from galerne.protocol.errors import ErrorBody

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = "[DONE]"


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
    yield f"data: {DONE}\n\n".encode()


def _event(error: GalerneError) -> bytes:
    return b"data: " + error_body_for(error).model_dump_json().encode() + b"\n\n"


def event_stream_content(chunk: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `content` of a streamed answer, so clients and fuzzers can check every event.

    Before OpenAPI 3.2's `itemSchema`, tools read `schema` of `text/event-stream` as one event's:
    its `data` is a chunk or an error body as JSON (`contentSchema`), or the final `[DONE]`.
    """
    payload = TypeAdapter(chunk | ErrorBody).json_schema(mode="serialization")  # type: ignore[arg-type]
    data = {
        "anyOf": [
            {"const": DONE},
            {"type": "string", "contentMediaType": "application/json", "contentSchema": _inline_refs(payload)},
        ]
    }
    event = {"type": "object", "properties": {"data": data}, "required": ["data"]}
    return {"text/event-stream": {"schema": event}}


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's schema with each `#/$defs/...` reference replaced by its definition (none is recursive):
    inside an OpenAPI document, `#` would point at the document, not at this schema."""
    definitions = schema.get("$defs", {})

    def expand(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return expand(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: expand(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [expand(item) for item in node]
        return node

    result: dict[str, Any] = expand(schema)
    return result
