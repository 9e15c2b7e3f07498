"""Log in, sign up, log out, the settings page and the language switcher.

Forms post back to the page they came from; a refused form is shown again with the reason in the user's
language and the HTTP status the API would answer (401, 403, 409, 429 with Retry-After, ...), so both a
person and a test can tell what happened.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from galerne.errors import GalerneError, InvalidRequestError, RateLimitExceededError
from galerne.services.users import SignUp
from galerne.web.auth import SESSION_COOKIE, CurrentUser, WebAuthDep, client_address
from galerne.web.cookies import clear_session_cookie, set_language_cookie, set_session_cookie
from galerne.web.i18n import LANGUAGES, N_
from galerne.web.runtime import WebRuntimeDep
from galerne.web.templating import render, request_language, translate

router = APIRouter(include_in_schema=False)
HOME = "/chat"

# What a refusal's code says to a person, in words the catalogues translate.
_MESSAGES = {
    "invalid_credentials": N_("Wrong e-mail or password."),
    "account_disabled": N_("This account is disabled. Ask the operator."),
    "too_many_login_attempts": N_("Too many failed logins. Try again in %(seconds)s seconds."),
    "signup_closed": N_("Sign-up is closed. Ask the operator for an account."),
    "invite_required": N_("Sign-up needs an invite. Ask the operator for one."),
    "invite_invalid": N_("This invite was already used, has expired or is for another address."),
    "invalid_email": N_("This is not an e-mail address."),
    "password_too_short": N_("The password needs at least 8 characters."),
    "password_too_long": N_("The password is too long."),
    "passwords_differ": N_("The two passwords differ."),
    "already_exists": N_("An account with this e-mail already exists."),
    "wrong_password": N_("The current password is wrong."),
    "invalid_display_name": N_("The display name is too long or has control characters."),
    "invalid_locale": N_("Unknown language."),
}

Text = Annotated[str, Form(max_length=4096)]
OptionalText = Annotated[str, Form(max_length=4096)]


def describe(request: Request, error: GalerneError) -> str:
    """A refusal in the user's language (the service's English message when no translation fits)."""
    message = _MESSAGES.get(error.code or "")
    if message is None:
        return error.message
    seconds = getattr(error, "retry_after", None)
    return translate(request, message) % {"seconds": seconds}


def safe_next(target: str | None) -> str:
    """Only a path of this app: never another site (`//evil.example`, `https://...`)."""
    if not target or not target.startswith(("/chat", "/console")) or target.startswith("//") or "\\" in target:
        return HOME
    return target


def _redirect(target: str) -> RedirectResponse:
    return RedirectResponse(target, status_code=303)


@router.get("/chat/login", response_class=HTMLResponse)
async def login_page(request: Request, auth: WebAuthDep, runtime: WebRuntimeDep, next: str = HOME) -> Response:
    if auth.user is not None:
        return _redirect(safe_next(next))
    return render(request, "login.html", next=safe_next(next), email="", error=None,
                  signup=runtime.settings.signup)


@router.post("/chat/login", response_class=HTMLResponse)
async def login(
    request: Request, runtime: WebRuntimeDep, email: Text, password: Text, next: OptionalText = HOME
) -> Response:
    address = client_address(request)

    def refused(error: GalerneError) -> HTMLResponse:
        page = render(request, "login.html", status_code=error.status, next=safe_next(next), email=email,
                      error=describe(request, error), signup=runtime.settings.signup)
        page.headers.update(error.headers())
        return page

    try:
        await runtime.login_throttle.check(email, address)
    except RateLimitExceededError as exc:
        return refused(exc)
    try:
        user = await run_in_threadpool(runtime.users.authenticate, email, password)
    except GalerneError as exc:
        if exc.code == "invalid_credentials":
            await runtime.login_throttle.record_failure(email, address)
        return refused(exc)
    started = await run_in_threadpool(runtime.sessions.start, user.id)
    response = _redirect(safe_next(next))
    set_session_cookie(response, request, runtime.settings, started.token)
    if user.locale is not None:
        set_language_cookie(response, request, runtime.settings, user.locale)
    return response


@router.get("/chat/signup", response_class=HTMLResponse)
async def signup_page(request: Request, auth: WebAuthDep, runtime: WebRuntimeDep, invite: str = "") -> Response:
    if auth.user is not None:
        return _redirect(HOME)
    mode = runtime.settings.signup
    return render(request, "signup.html", status_code=403 if mode == "closed" else 200, mode=mode,
                  invite=invite[:128], email="", display_name="", error=None)


@router.post("/chat/signup", response_class=HTMLResponse)
async def signup(
    request: Request, runtime: WebRuntimeDep, email: Text, password: Text, password_again: Text,
    display_name: OptionalText = "", invite: OptionalText = "",
) -> Response:
    mode = runtime.settings.signup
    def refused(error: GalerneError) -> HTMLResponse:
        return render(request, "signup.html", status_code=error.status, mode=mode, invite=invite, email=email,
                      display_name=display_name, error=describe(request, error))

    if password != password_again:
        return refused(InvalidRequestError("the two passwords differ", code="passwords_differ"))
    wanted = SignUp(email=email, password=password, display_name=display_name, invite=invite or None,
                      locale=request_language(request))
    try:
        user = await run_in_threadpool(runtime.users.sign_up, wanted)
    except GalerneError as exc:
        return refused(exc)
    started = await run_in_threadpool(runtime.sessions.start, user.id)
    response = _redirect(HOME)
    set_session_cookie(response, request, runtime.settings, started.token)
    return response


@router.post("/chat/logout")
async def logout(request: Request, runtime: WebRuntimeDep) -> Response:
    await run_in_threadpool(runtime.sessions.end, request.cookies.get(SESSION_COOKIE))
    response = _redirect("/chat/login")
    clear_session_cookie(response, request, runtime.settings)
    return response


@router.get("/chat/settings", response_class=HTMLResponse)
async def settings_page(request: Request, user: CurrentUser, saved: str = "") -> Response:
    return render(request, "settings.html", saved=saved if saved in {"profile", "password"} else "", error=None,
                  error_form="")


@router.post("/chat/settings/profile", response_class=HTMLResponse)
async def update_profile(
    request: Request, user: CurrentUser, runtime: WebRuntimeDep, display_name: Text, locale: OptionalText = ""
) -> Response:
    try:
        await run_in_threadpool(lambda: runtime.users.update_profile(user.id, display_name=display_name,
                                                                     locale=locale))
    except GalerneError as exc:
        return render(request, "settings.html", status_code=exc.status, saved="", error=describe(request, exc),
                      error_form="profile")
    response = _redirect("/chat/settings?saved=profile")
    if locale in LANGUAGES:
        set_language_cookie(response, request, runtime.settings, locale)
    return response


@router.post("/chat/settings/password", response_class=HTMLResponse)
async def change_password(
    request: Request, user: CurrentUser, auth: WebAuthDep, runtime: WebRuntimeDep, current_password: Text,
    new_password: Text, new_password_again: Text,
) -> Response:
    try:
        if new_password != new_password_again:
            raise InvalidRequestError("the two passwords differ", code="passwords_differ")
        keep = auth.session.id if auth.session is not None else None
        await run_in_threadpool(
            lambda: runtime.users.change_password(user.id, current_password, new_password, keep_session=keep)
        )
    except GalerneError as exc:
        return render(request, "settings.html", status_code=exc.status, saved="", error=describe(request, exc),
                      error_form="password")
    return _redirect("/chat/settings?saved=password")


@router.post("/chat/language")
async def switch_language(
    request: Request, auth: WebAuthDep, runtime: WebRuntimeDep, lang: Text, next: OptionalText = HOME
) -> Response:
    """The layout's switcher: remembered in a cookie, and in the user's settings when logged in."""
    response = _redirect(safe_next(next))
    if lang not in LANGUAGES:
        return response
    if auth.user is not None:
        user_id = auth.user.id
        await run_in_threadpool(lambda: runtime.users.update_profile(user_id, locale=lang))
    set_language_cookie(response, request, runtime.settings, lang)
    return response


@router.get("/chat/api/me")
async def me(user: CurrentUser, auth: WebAuthDep) -> dict[str, object]:
    """The logged-in user and the CSRF token scripts send back in `X-CSRF-Token` (401 when logged out)."""
    return {
        "id": user.id, "email": user.email, "display_name": user.display_name, "locale": user.locale,
        "is_admin": user.is_admin, "csrf_token": auth.csrf_token,
    }
