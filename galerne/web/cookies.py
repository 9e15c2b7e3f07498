"""Setting and clearing the web app's cookies with the right flags in one place.

The session cookie is HttpOnly (scripts never see it), SameSite=Lax (sent on top-level navigation to us,
never on cross-site POSTs or sub-requests) and Secure when the request came over https (`cookie_secure =
auto`: plain http on localhost must work, and a browser refuses to store a Secure cookie from http), or
always, or never, as the operator sets it. The path is `/`: Le Chat and the console share the login.
"""

from __future__ import annotations

from fastapi import Request, Response

from galerne.config import Settings
from galerne.web.auth import SESSION_COOKIE
from galerne.web.i18n import LANGUAGE_COOKIE

LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600
COOKIE_PATH = "/"  # Le Chat (/chat) and the console (/console) share one login
LEGACY_COOKIE_PATH = "/chat"


def is_secure(request: Request, settings: Settings) -> bool:
    if settings.cookie_secure == "auto":
        return request.url.scheme == "https"
    return settings.cookie_secure == "always"


def set_session_cookie(response: Response, request: Request, settings: Settings, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, max_age=settings.session_max_seconds, path=COOKIE_PATH, httponly=True, samesite="lax",
        secure=is_secure(request, settings),
    )


def clear_session_cookie(response: Response, request: Request, settings: Settings) -> None:
    for path in (COOKIE_PATH, LEGACY_COOKIE_PATH):  # a cookie from before the console was scoped to /chat
        response.delete_cookie(
            SESSION_COOKIE, path=path, httponly=True, samesite="lax", secure=is_secure(request, settings)
        )


def set_language_cookie(response: Response, request: Request, settings: Settings, lang: str) -> None:
    response.set_cookie(
        LANGUAGE_COOKIE, lang, max_age=LANGUAGE_COOKIE_SECONDS, path=COOKIE_PATH, httponly=True, samesite="lax",
        secure=is_secure(request, settings),
    )
