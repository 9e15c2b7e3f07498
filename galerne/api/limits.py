"""Refuse oversized bodies with 413 before they are read into memory (a pure ASGI middleware)."""

from __future__ import annotations

import re
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from galerne.api.errors import error_response
from galerne.errors import PayloadTooLargeError

MULTIPART_ROOM = 64 * 1024  # the multipart headers and fields around an uploaded file


class BodySizeLimit:
    """Checks `Content-Length` up front; a chunked body is read up to the limit and then replayed.

    `upload_paths` get `max_upload_bytes` instead (file uploads: the route checks the file itself; the
    multipart envelope around it gets a little room). Each is a regular expression a path must match in full
    (`/chat/api/conversations/[0-9a-f]{32}/files`); a plain path matches itself."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, *, upload_paths: Collection[str] = frozenset(), max_upload_bytes: int = 0
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_paths = re.compile("|".join(f"(?:{path})" for path in upload_paths)) if upload_paths else None
        self.max_upload_bytes = max(max_upload_bytes + MULTIPART_ROOM, max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload_bytes if self._is_upload(scope.get("path", "")) else self.max_bytes
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > limit:
                await self._refuse(scope, receive, send, limit)
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > limit:
                await self._refuse(scope, receive, send, limit)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    def _is_upload(self, path: str) -> bool:
        return self.upload_paths is not None and self.upload_paths.fullmatch(path) is not None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        error = PayloadTooLargeError(f"the request body is larger than the {limit}-byte limit")
        await error_response(error)(scope, receive, send)
