"""Server-rendered pages: one Jinja environment (autoescaped, with the i18n extension) and `render`.

`render(request, "page.html", **ctx)` adds what every page needs — `user`, `csrf_token`, `lang`,
`languages`, `static()` — picks the request's language for `{% trans %}` and `_()`, and sets the headers
that make injected markup inert (a Content-Security-Policy allowing only our own scripts and styles, no
inline script, no framing). Templates are in `galerne/web/templates/`; `base.html` has the blocks `title`,
`sidebar`, `main` and `scripts`.

Example::

    @router.get("/chat/settings")
    async def settings_page(request: Request, user: CurrentUser) -> HTMLResponse:
        return render(request, "settings.html", saved=False)
"""

from __future__ import annotations

import gettext
from functools import cache
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

import galerne
from galerne.web.auth import CSRF_COOKIE, WebAuth
from galerne.web.i18n import LANGUAGE_COOKIE, LANGUAGES, choose_language, translations

STATIC_PREFIX = "/chat/static/"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # pages hold a user's data and a CSRF token: never from a shared cache
}
CSRF_COOKIE_SECONDS = 24 * 3600


@jinja2.pass_context
def _gettext(context: jinja2.runtime.Context, message: str) -> str:
    catalogue: gettext.NullTranslations = context["translations"]
    return catalogue.gettext(message)


@jinja2.pass_context
def _ngettext(context: jinja2.runtime.Context, singular: str, plural: str, count: int) -> str:
    catalogue: gettext.NullTranslations = context["translations"]
    return catalogue.ngettext(singular, plural, count)


@cache
def environment() -> jinja2.Environment:
    """Built on first use (never at import) and shared: the language travels in each render's context."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("galerne.web", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.install_gettext_callables(_gettext, _ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["static"] = static_url
    return env


def static_url(path: str) -> str:
    """A static file's URL, with the version so that an upgrade is never served stale CSS or JS."""
    return f"{STATIC_PREFIX}{path}?v={galerne.__version__}"


def request_language(request: Request) -> str:
    auth: WebAuth | None = getattr(request.state, "web_auth", None)
    user = auth.user if auth is not None else None
    return choose_language(
        user_locale=user.locale if user is not None else None,
        cookie=request.cookies.get(LANGUAGE_COOKIE),
        accept_language=request.headers.get("accept-language"),
    )


def render(request: Request, name: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The page `name` in the request's language, with the layout's context and the security headers."""
    auth: WebAuth | None = getattr(request.state, "web_auth", None)
    lang = request_language(request)
    full_context = {
        "request": request,
        "user": auth.user if auth is not None else None,
        "csrf_token": auth.csrf_token if auth is not None else "",
        "lang": lang,
        "languages": LANGUAGES,
        "translations": translations(lang),
        "current_path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        **context,
    }
    html = environment().get_template(name).render(full_context)
    response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
    if auth is not None and auth.is_new_csrf_cookie:
        response.set_cookie(
            CSRF_COOKIE, auth.csrf_token, max_age=CSRF_COOKIE_SECONDS, path="/", httponly=True,
            samesite="strict", secure=request.url.scheme == "https",
        )
    return response


def translate(request: Request, message: str) -> str:
    """`message` in the request's language, for text made in Python (flash messages, JSON errors)."""
    return translations(request_language(request)).gettext(message)
