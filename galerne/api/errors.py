"""The one place where errors become HTTP responses, in la Plateforme's error body.

Schema errors name the offending field; nothing unexpected ever shows a traceback or a file path, and an
unexpected error (a bug) is logged once, with its traceback. Streams end with an error event instead
(`galerne.api.sse`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from galerne.errors import GalerneError, InvalidRequestError, RequestValidationFailed
from galerne.protocol.base import INVALID_UNICODE
from galerne.protocol.errors import ErrorBody

logger = logging.getLogger(__name__)

# Parts of pydantic's error locations that name a union member or a type, not a field.
_UNION_TAGS = frozenset({"system", "user", "assistant", "tool", "developer", "text", "image_url", "str", "list"})
_GENERATED_TAG_PREFIXES = ("function-", "list[", "dict[", "literal[", "constrained-")
_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
UNEXPECTED_ERROR_MESSAGE = "internal server error; the operator can find details in the log"
# What each documented error status means, for the OpenAPI document; every one has la Plateforme's body.
_STATUS_MEANINGS = {
    400: "A rule of the API is broken (role order, a schema that cannot be compiled, text that is not valid "
    "Unicode, bad JSON); the message says how to fix it.",
    401: "No API key, or one that is malformed, unknown, revoked, expired or disabled.",
    403: "The endpoint needs an admin key.",
    404: "No such model (or one the key's project may not use), project or key.",
    409: "It already exists.",
    413: "The request body is larger than the server's limit.",
    422: "The body does not match the schema (a wrong type, a value out of bounds, an unknown field); "
    "`param` names the field.",
    429: "A rate limit or budget is reached, or the engine's queue is full; see `Retry-After`.",
    500: "The model failed while generating, or a bug; the operator finds the details in the log.",
    502: "A remote model's upstream gave no usable answer.",
    503: "A part the platform needs (engine, database, rate-limit store, metering) cannot serve now; "
    "see `Retry-After`.",
    504: "A remote model's upstream did not answer in time.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a router: the error statuses its routes can answer, in one body shape.

    Documenting 422 with `ErrorBody` also replaces FastAPI's default `HTTPValidationError`, which is not
    what clients receive. Example: ``APIRouter(responses=error_responses(401, 403, 404))``.
    """
    return {status: {"model": ErrorBody, "description": _STATUS_MEANINGS[status]} for status in statuses}


def error_body_for(error: GalerneError) -> ErrorBody:
    return ErrorBody(message=error.message, type=error.type, param=error.param, code=error.code)


def error_response(error: GalerneError) -> JSONResponse:
    body = error_body_for(error)
    return JSONResponse(body.model_dump(), status_code=error.status, headers=error.headers())


def validation_error(exc: RequestValidationError) -> GalerneError:
    """The first schema violation, as `field.path: what is wrong` (malformed JSON is a 400)."""
    errors = exc.errors()
    if not errors:
        return RequestValidationFailed("the request body is invalid")
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return InvalidRequestError(f"the request body is not valid JSON: {first.get('msg', '')}", code="invalid_json")
    if first.get("type") == INVALID_UNICODE:  # well-formed JSON, but text no encoder can take
        param = first.get("ctx", {}).get("param")
        return InvalidRequestError(str(first.get("msg", "invalid Unicode")), param=param, code=INVALID_UNICODE)
    field = _field_path(location)
    message = f"{field}: {first.get('msg', 'invalid value')}" if field else str(first.get("msg", "invalid body"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return RequestValidationFailed(message, param=field or None)


def _field_path(location: list[str]) -> str:
    """`messages.0.user.content` -> `messages[0].content`: indexes in brackets, union tags dropped."""
    path = ""
    for part in location:
        if part.isdigit():
            path += f"[{part}]"
        elif part in _UNION_TAGS or part.startswith(_GENERATED_TAG_PREFIXES):
            continue
        else:
            path += f".{part}" if path else part
    return path


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GalerneError)
    async def _galerne(_: Request, exc: GalerneError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = ErrorBody(
            message=str(exc.detail),
            type=_HTTP_TYPES.get(exc.status_code, "invalid_request_error"),
            code=str(exc.status_code),
        )
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=exc.headers)

    app.add_middleware(CatchUnexpectedErrors)


class CatchUnexpectedErrors:
    """Answers an exception that no handler knows (a bug) with the generic 500, logging it once.

    Not an `exception_handler(Exception)`: Starlette runs that one in its outermost middleware and then
    re-raises, so the server would log the same traceback a second time as a crashed ASGI application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal is_started
            is_started = is_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except Exception:
            logger.exception("unhandled error")
            if not is_started:  # once a response has started, all that is left is to end it
                await error_response(GalerneError(UNEXPECTED_ERROR_MESSAGE))(scope, receive, send)
