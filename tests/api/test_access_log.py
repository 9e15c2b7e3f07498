"""Credentials in URLs are redacted before uvicorn's access log writes them."""

from __future__ import annotations

import logging

import pytest

from galerne.api.access_log import RedactCredentials, redact_url

KEY = "gal-3f9a0c1b2d4e.q9LxYz0123456789abcdefghijklmnopqrstuvwxyzAB"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"/v1/models?api_key={KEY}", "/v1/models?api_key=[REDACTED]"),
        ("/v1/models?API_KEY=hunter2&limit=5", "/v1/models?API_KEY=[REDACTED]&limit=5"),
        (
            "/x?a=1&Token=t0k&access_token=abc&key=k&b=2",
            "/x?a=1&Token=[REDACTED]&access_token=[REDACTED]&key=[REDACTED]&b=2",
        ),
        ("/x?api%5Fkey=hunter2", "/x?api%5Fkey=[REDACTED]"),
        (f"/v1/models/{KEY}", "/v1/models/gal-3f9a0c1b2d4e.[REDACTED]"),
        (f"/x?q={KEY}", "/x?q=gal-3f9a0c1b2d4e.[REDACTED]"),
        ("/admin/usage?group_by=project,model&keyboard=1", "/admin/usage?group_by=project,model&keyboard=1"),
        ("/health", "/health"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_the_filter_rewrites_uvicorns_access_record() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/models?token=hunter2", "1.1", 401), None,
    )
    assert RedactCredentials().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /v1/models?token=[REDACTED] HTTP/1.1" 401'
