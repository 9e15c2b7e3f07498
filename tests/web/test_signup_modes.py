"""Sign-up modes, disabled accounts, session expiry and the `galerne users` CLI, against real servers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, run_cli, stop_server
from tests.web.conftest import PASSWORD, create_user, csrf_of, http_login, start_web_server


@pytest.fixture(scope="module")
def invite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Invite-only sign-up, sessions that end after 10 s unused, per-user chat projects."""
    running = start_web_server(
        tmp_path_factory.mktemp("galerne-invite"), signup="invite", session_idle_seconds="10",
        chat_projects="per-user",
    )
    yield running
    stop_server(running)


def _sign_up(server: RunningServer, email: str, invite: str = "") -> httpx.Response:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        token = csrf_of(client.get(f"/chat/signup?invite={invite}").text)
        return client.post("/chat/signup", data={
            "email": email, "password": PASSWORD, "password_again": PASSWORD, "invite": invite, "csrf_token": token,
        })


def test_invite_mode_needs_a_single_use_invite_from_the_cli(invite_server: RunningServer) -> None:
    refused = _sign_up(invite_server, "walk-in@example.org")
    assert refused.status_code == 403 and "needs an invite" in refused.text
    invite = invite_server.cli("users", "invite", "--email", "guest@example.org")
    assert invite["link"] == f"/chat/signup?invite={invite['token']}"
    page = httpx.get(f"{invite_server.base_url}{invite['link']}", timeout=30)
    assert page.status_code == 200 and invite["token"] in page.text  # the link fills the form in
    assert _sign_up(invite_server, "someone-else@example.org", invite["token"]).status_code == 403
    accepted = _sign_up(invite_server, "guest@example.org", invite["token"])
    assert accepted.status_code == 303 and "galerne_session" in accepted.headers["set-cookie"]
    again = _sign_up(invite_server, "guest2@example.org", invite["token"])
    assert again.status_code == 403 and "already used" in again.text
    listed = {user["email"]: user for user in invite_server.cli("users", "list")}
    assert listed["guest@example.org"]["project"] == f"user-{listed['guest@example.org']['id']}"


def test_a_disabled_user_is_logged_out_and_cannot_log_in(invite_server: RunningServer) -> None:
    account = create_user(invite_server, "leaver@example.org")
    with http_login(invite_server, account) as client:
        assert client.get("/chat/api/me").status_code == 200
        disabled = invite_server.cli("users", "disable", "leaver@example.org")
        assert disabled["is_disabled"] is True
        assert client.get("/chat/api/me").status_code == 401
    with httpx.Client(base_url=invite_server.base_url, timeout=30) as client:
        token = csrf_of(client.get("/chat/login").text)
        refused = client.post("/chat/login", data={"email": account.email, "password": PASSWORD, "csrf_token": token})
        assert refused.status_code == 403 and "disabled" in refused.text
    invite_server.cli("users", "enable", "leaver@example.org")
    with http_login(invite_server, account) as client:
        assert client.get("/chat/api/me").json()["email"] == account.email


def test_an_unused_session_expires(invite_server: RunningServer) -> None:
    account = create_user(invite_server, "sleeper@example.org")
    with http_login(invite_server, account) as client:
        for _ in range(3):  # in use: it lives past its 10 idle seconds
            time.sleep(4)
            assert client.get("/chat/api/me").status_code == 200
        token = client.get("/chat/api/me").json()["csrf_token"]
        time.sleep(11)
        assert client.get("/chat/api/me").status_code == 401
        assert client.get("/chat/settings").headers["location"].startswith("/chat/login")
        # A form of a page left open past the end: back to the login page, not a bare 403.
        late = client.post("/chat/settings/profile", data={"display_name": "late", "csrf_token": token})
        assert late.status_code == 303 and late.headers["location"].startswith("/chat/login")
        assert client.post("/chat/logout", headers={"X-CSRF-Token": token}).status_code == 403  # scripts: no redirect


def test_closed_mode_and_the_users_cli(tmp_path: Path) -> None:
    server = start_web_server(tmp_path, signup="closed", cookie_secure="always")
    try:
        page = httpx.get(f"{server.base_url}/chat/signup", timeout=30)
        assert page.status_code == 403 and "Sign-up is closed" in page.text
        assert "/chat/signup" not in httpx.get(f"{server.base_url}/chat/login", timeout=30).text
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            token = csrf_of(client.get("/chat/signup").text)
            refused = client.post("/chat/signup", data={"email": "x@example.org", "password": PASSWORD,
                                                        "password_again": PASSWORD, "csrf_token": token})
            assert refused.status_code == 403

        made = run_cli(server.home, "users", "create", "Boss@Example.org", "--password", PASSWORD, "--name", "Boss",
                       "--admin")
        assert (made["email"], made["display_name"], made["is_admin"], made["project"]) == (
            "boss@example.org", "Boss", True, "chat"
        )
        with pytest.raises(RuntimeError, match="already exists"):
            run_cli(server.home, "users", "create", "boss@example.org", "--password", PASSWORD)
        with pytest.raises(RuntimeError, match="at least 8"):
            run_cli(server.home, "users", "create", "short@example.org", "--password", "short")
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            token = csrf_of(client.get("/chat/login").text)
            logged_in = client.post("/chat/login", data={"email": "boss@example.org", "password": PASSWORD,
                                                         "csrf_token": token})
            assert logged_in.status_code == 303
            assert "; secure" in logged_in.headers["set-cookie"].lower()  # cookie_secure=always, even on http
        listed = run_cli(server.home, "users", "list")
        assert [user["email"] for user in listed] == ["boss@example.org"]
        assert listed[0]["last_login_at"] is not None and "password_hash" not in listed[0]
    finally:
        stop_server(server)
