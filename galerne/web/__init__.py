"""Le Chat (the web app at /chat) and the console (/console): served by the API's process, through its services.

Server-rendered Jinja templates with a little vanilla JavaScript, static files shipped in the package
(no build step, no CDN), accounts with argon2 passwords, cookie sessions with CSRF tokens, and the UI in
five languages from gettext catalogues. See docs/chat.md.

Example (what `create_app` does)::

    app = FastAPI(lifespan=...)
    mount_web(app)                                   # routes and static files, at once
    ...                                              # then, in the lifespan, once the services exist:
    app.state.web = WebRuntime(settings=settings, users=UserService(database, ...), ...)
"""

from __future__ import annotations

from importlib.resources import files
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from galerne.web.auth import LoginRequired, enforce_csrf, load_auth
from galerne.web.routes import accounts, attachments, chat_api, console, console_api, conversations

# Every router of the web app; each is included with the session lookup and CSRF check of `galerne.web.auth`.
ROUTERS: list[APIRouter] = [
    accounts.router, conversations.router, chat_api.router, attachments.router, console.router, console_api.router
]


def mount_web(app: FastAPI) -> None:
    """Add the web app's routes, its static files and the login redirect to `app`."""
    static = StaticFiles(directory=str(files("galerne.web").joinpath("static")))
    app.mount("/chat/static", static, name="chat-static")
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(load_auth), Depends(enforce_csrf)])

    @app.exception_handler(LoginRequired)
    async def _to_login(_: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/chat/login?next={quote(exc.next_path, safe='/')}", status_code=303)
