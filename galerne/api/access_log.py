"""Credentials never reach the access log.

Galerne reads keys from headers only, but a client may still put one in a URL (`?api_key=gal-...`): the
request is refused (401), yet uvicorn's access log would keep the key in plain text. A filter on the
`uvicorn.access` logger rewrites every logged URL first: the value of any query parameter named like a
credential is replaced, and so is the secret of anything shaped like a Galerne key, wherever it sits.

Example: ``redact_url("/v1/models?api_key=gal-3f9a0c1b2d4e.q9L")`` is ``"/v1/models?api_key=[REDACTED]"``.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

REDACTED = "[REDACTED]"
# Compared lower-cased, after percent-decoding, so `API_KEY` and `api%5Fkey` are caught too.
SECRET_PARAMETERS = frozenset(
    {"api_key", "api-key", "apikey", "key", "token", "access_token", "auth", "password", "secret", "client_secret"}
)
_GALERNE_SECRET = re.compile(r"(gal-[0-9a-f]{12})\.[A-Za-z0-9_\-%]+")


def redact_url(url: str) -> str:
    """`url` with credentials replaced by [REDACTED]; everything else as it was, byte for byte."""
    path, question_mark, query = url.partition("?")
    if question_mark:
        query = "&".join(_redact_parameter(pair) for pair in query.split("&"))
    return _GALERNE_SECRET.sub(rf"\1.{REDACTED}", path + question_mark + query)


def _redact_parameter(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    if equals and unquote_plus(name).strip().lower() in SECRET_PARAMETERS:
        return f"{name}={REDACTED}"
    return pair


class RedactCredentials(logging.Filter):
    """Rewrites the string arguments of each record (uvicorn logs the URL as one of them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def hide_credentials_in_access_log() -> None:
    """Install the filter once on uvicorn's access logger (uvicorn's own logging set-up keeps it)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactCredentials) for existing in access.filters):
        access.addFilter(RedactCredentials())
