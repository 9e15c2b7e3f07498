"""A streaming response that always settles what it streams, shared by the API and Le Chat.

It lives outside the layers because both `api` and `web` stream generations and `web` may not import `api`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


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
