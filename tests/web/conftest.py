"""Le Chat test harness: a real `galerne serve` with the web app, users made through the real CLI, and a
real headless Chromium (Debian's, driven by Playwright) with one browser per test module and a fresh
context — cookies, locale, viewport — per test.

Screenshots go to `screenshots/` at the repository root (gitignored); `GALERNE_SCREENSHOTS` moves them.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, run_cli, start_server, stop_server
from tests.databases import unreachable

CHROMIUM = os.environ.get("GALERNE_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("GALERNE_SCREENSHOTS", Path(__file__).resolve().parents[2] / "screenshots"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}  # an iPhone 12-14's CSS viewport
PASSWORD = "correct horse battery"


@dataclass
class WebUserAccount:
    email: str
    password: str
    id: str
    project: str | None


def start_web_server(home: Path, **settings: str) -> RunningServer:
    """A real server with the web app on; `settings` are `GALERNE_*` names without the prefix (signup="open")."""
    env = {f"GALERNE_{name.upper()}": value for name, value in settings.items()}
    # Generous: on a loaded machine, loading the model and migrating can take over a minute.
    return start_server(home, env=env, start_seconds=180)


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose sign-up is open (other modes start their own with `start_web_server`), shared by the
    modules a test worker runs: tests make their own users and projects, so they need no server of their own."""
    running = start_web_server(tmp_path_factory.mktemp("galerne-web"), signup="open")
    yield running
    stop_server(running)


def create_user(server: RunningServer, email: str, password: str = PASSWORD, *args: str) -> WebUserAccount:
    """An account made by the operator's CLI (`galerne users create`), on the server's database."""
    made: dict[str, Any] = run_cli(server.home, "users", "create", email, "--password", password, *args,
                                   env=server.env)
    return WebUserAccount(email=made["email"], password=password, id=made["id"], project=made["project"])


@pytest.fixture
def make_user(web_server: RunningServer) -> Callable[..., WebUserAccount]:
    counter = iter(range(1_000_000))

    def make(prefix: str = "user", password: str = PASSWORD) -> WebUserAccount:
        return create_user(web_server, f"{prefix}-{os.getpid()}-{next(counter)}-{os.urandom(3).hex()}@example.org",
                           password)

    return make


CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page_html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = CSRF_INPUT.search(page_html)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


@contextmanager
def http_login(server: RunningServer, account: WebUserAccount, **client_options: Any) -> Iterator[httpx.Client]:
    """An HTTP client logged in as `account` through the real login form (cookies kept in the client)."""
    with httpx.Client(base_url=server.base_url, timeout=30, **client_options) as client:
        token = csrf_of(client.get("/chat/login").text)
        response = client.post("/chat/login", data={"email": account.email, "password": account.password,
                                                   "csrf_token": token})
        assert response.status_code == 303, response.text
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium per test module."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        unreachable(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def new_context(browser: Any) -> Iterator[Callable[..., Any]]:
    """Make browser contexts (own cookies) for this test: `new_context(locale="fr-FR", viewport=PHONE)`."""
    contexts: list[Any] = []

    def make(*, locale: str = "en-US", viewport: dict[str, int] | None = None, **options: Any) -> Any:
        context = browser.new_context(locale=locale, viewport=viewport or DESKTOP, **options)
        context.set_default_timeout(20_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as `screenshots/<name>.png`."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
