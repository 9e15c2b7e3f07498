"""A reply as server-sent events for the page's script: `start`, `delta`s, then `done` (or `error`).

Each `delta` carries the new text; about ten times a second it also carries the whole reply so far as
sanitised HTML, which the page swaps in place — the browser never parses model output as HTML itself, and
the answer grows inside a box that only ever gets taller (no layout jump). The last event always carries
the final HTML, the token counts and how the reply ended.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

from galerne.errors import GalerneError
from galerne.services.conversations import StoredMessage
from galerne.services.replies import Reply, ReplyDone, ReplyText
from galerne.settled_response import SettledStreamingResponse
from galerne.web.markdown import render_markdown

logger = logging.getLogger(__name__)

HTML_INTERVAL_SECONDS = 0.1
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def message_json(message: StoredMessage) -> dict[str, Any]:
    """A message as the page's script shows it: its sanitised HTML beside its plain text."""
    return {
        "id": message.id,
        "position": message.position,
        "role": message.role,
        "content": message.content,
        "html": render_markdown(message.content),
        "model": message.model,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "finish_reason": message.finish_reason,
        "created_at": message.created_at.isoformat(),
        "references": [asdict(reference) for reference in message.references],
    }


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def reply_events(reply: Reply) -> AsyncIterator[bytes]:
    start: dict[str, Any] = {"type": "start", "model": reply.model, "conversation_id": reply.conversation_id}
    if reply.user_message is not None:
        start["user_message"] = message_json(reply.user_message)
    yield _event(start)
    parts: list[str] = []
    last_html = 0.0  # the first delta always carries HTML: the first token shows at once
    try:
        async for event in reply.events():
            if isinstance(event, ReplyText):
                parts.append(event.text)
                payload: dict[str, Any] = {"type": "delta", "text": event.text}
                now = time.monotonic()
                if now - last_html >= HTML_INTERVAL_SECONDS:
                    payload["html"] = render_markdown("".join(parts))
                    last_html = now
                yield _event(payload)
            elif isinstance(event, ReplyDone):
                yield _event({"type": "done", "message": message_json(event.message)})
    except GalerneError as exc:
        yield _event(error_json(exc))
    except Exception:
        logger.exception("a chat reply failed unexpectedly")
        yield _event({"type": "error", "status": 500, "code": "internal_error",
                      "message": "internal server error; the operator can find details in the log"})


def error_json(error: GalerneError) -> dict[str, Any]:
    retry_after = getattr(error, "retry_after", None)
    return {"type": "error", "status": error.status, "code": error.code, "message": error.message,
            "retry_after": retry_after}


class ReplyResponse(SettledStreamingResponse):
    """Streams a reply; `on_close` runs however the response ends — even when the client left before the
    first byte (which never starts the body), so the reply is stopped and what it made is stored."""

    def __init__(self, reply: Reply, on_close: Callable[[], None]) -> None:
        super().__init__(reply_events(reply), media_type="text/event-stream", headers=SSE_HEADERS, on_close=on_close)
