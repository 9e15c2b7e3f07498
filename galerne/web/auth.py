"""Who is using the web app, and whether a state-changing request really comes from our own pages.

Every web route runs `load_auth` (a router-level dependency installed by `mount_web`): one query finds the
session of the `galerne_session` cookie, its user and their project. `CurrentUser` then demands a user —
pages redirect to /chat/login, /chat/api/* and /console/api/* answer 401 — and `enforce_csrf`, also router-wide, refuses
(403) any POST, PUT, PATCH or DELETE whose `csrf_token` form field or `X-CSRF-Token` header does not match
the session's token. Before login the token is a random value in the `galerne_csrf` cookie (double-submit),
so the login and sign-up forms cannot be posted from another site either.

Example::

    @router.post("/chat/api/things")
    async def create_thing(user: CurrentUser, runtime: WebRuntimeDep) -> dict[str, str]: ...
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from galerne.errors import AuthenticationError, PermissionDeniedError
from galerne.services.auth import Principal
from galerne.services.sessions import ActiveSession
from galerne.web.runtime import WebRuntimeDep

SESSION_COOKIE = "galerne_session"
CSRF_COOKIE = "galerne_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
API_PREFIXES = ("/chat/api/", "/console/api/")  # answered with JSON errors, never a redirect to the login
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class WebUser:
    """The logged-in user, as pages see them."""

    id: str
    email: str
    display_name: str
    project_id: str | None
    is_admin: bool
    locale: str | None


@dataclass(frozen=True, slots=True)
class WebAuth:
    """What `load_auth` found: a session (with its user) or none, and the CSRF token this client must send."""

    session: ActiveSession | None
    csrf_token: str
    is_new_csrf_cookie: bool  # the pre-login token was just made: the response must set its cookie

    @property
    def user(self) -> WebUser | None:
        if self.session is None:
            return None
        user = self.session.user
        return WebUser(
            id=user.id, email=user.email, display_name=user.display_name, project_id=user.project_id,
            is_admin=user.is_admin, locale=user.locale,
        )


class LoginRequired(Exception):
    """A page needs a logged-in user: `mount_web` answers it with a redirect to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


async def load_auth(request: Request, runtime: WebRuntimeDep) -> WebAuth:
    """The request's session, looked up once per request (cached on `request.state`)."""
    cached: WebAuth | None = getattr(request.state, "web_auth", None)
    if cached is not None:
        return cached
    session = await run_in_threadpool(runtime.sessions.resolve, request.cookies.get(SESSION_COOKIE))
    if session is not None:
        auth = WebAuth(session=session, csrf_token=session.csrf_token, is_new_csrf_cookie=False)
    else:
        cookie = request.cookies.get(CSRF_COOKIE)
        is_usable = cookie is not None and 20 <= len(cookie) <= 128
        auth = WebAuth(session=None, csrf_token=cookie if is_usable and cookie else secrets.token_urlsafe(32),
                       is_new_csrf_cookie=not is_usable)
    request.state.web_auth = auth
    return auth


WebAuthDep = Annotated[WebAuth, Depends(load_auth)]


async def current_user(request: Request, auth: WebAuthDep) -> WebUser:
    user = auth.user
    if user is None:
        if request.url.path.startswith(API_PREFIXES):
            raise AuthenticationError("log in first: this needs a Le Chat session", code="not_logged_in")
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    return user


CurrentUser = Annotated[WebUser, Depends(current_user)]


async def current_principal(auth: WebAuthDep, _user: CurrentUser) -> Principal:
    """The caller the user's chat requests run as (their project's limits, budgets and models); 403 when their
    project is disabled or gone."""
    session = auth.session
    if session is None:  # CurrentUser has already refused this; kept for the type checker
        raise AuthenticationError("log in first", code="not_logged_in")
    if session.principal is None:
        raise session.principal_error or PermissionDeniedError("your account has no chat project")
    return session.principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def enforce_csrf(request: Request, auth: WebAuthDep) -> None:
    """403 for a state-changing request without this client's CSRF token (form field or header)."""
    if request.method not in _UNSAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and _is_form(request):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if auth.is_new_csrf_cookie or not sent or not hmac.compare_digest(sent.encode(), auth.csrf_token.encode()):
        if _session_ended(request, auth):  # a form of a page left open past the session's end: log in again
            raise LoginRequired("/chat")
        raise PermissionDeniedError(
            "missing or wrong CSRF token: reload the page and try again (scripts send the page's token in "
            f"the {CSRF_HEADER} header)",
            code="csrf_failed",
        )


require_csrf = enforce_csrf  # for routes that want to say it explicitly: `dependencies=[Depends(require_csrf)]`


def _session_ended(request: Request, auth: WebAuth) -> bool:
    """A page's form posted with a session cookie that no longer works (expired, logged out elsewhere)."""
    return (
        auth.session is None and SESSION_COOKIE in request.cookies and _is_form(request)
        and not request.url.path.startswith(API_PREFIXES)
    )


def _is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type in {"application/x-www-form-urlencoded", "multipart/form-data"}


def client_address(request: Request) -> str:
    """The client's address (uvicorn puts a trusted proxy's X-Forwarded-For here)."""
    return request.client.host if request.client is not None else "unknown"
