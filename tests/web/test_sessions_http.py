"""Le Chat's sessions over real HTTP: cookie flags, CSRF refusals, login rate limiting, logout."""

from __future__ import annotations

import time
from collections.abc import Callable
from http.cookies import SimpleCookie

import httpx

from tests.conftest import RunningServer
from tests.web.conftest import PASSWORD, WebUserAccount, csrf_of, http_login


def _set_cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    parsed: dict[str, SimpleCookie] = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            parsed[name] = cookie
    return parsed


def _login_response(server: RunningServer, account: WebUserAccount, **post_headers: str) -> httpx.Response:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        token = csrf_of(client.get("/chat/login").text)
        return client.post("/chat/login", data={"email": account.email, "password": account.password,
                                                "csrf_token": token}, headers=post_headers)


def test_session_cookie_is_httponly_samesite_lax_and_secure_only_over_https(
    web_server: RunningServer, make_user: Callable[..., WebUserAccount]
) -> None:
    account = make_user()
    plain = _login_response(web_server, account)
    assert plain.status_code == 303 and plain.headers["location"] == "/chat"
    cookie = _set_cookies(plain)["galerne_session"]["galerne_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"  # Le Chat and the console (/console) share the login
    assert not cookie["secure"]  # plain http on loopback: a Secure cookie would never come back
    assert len(cookie.value) >= 40
    # Behind a TLS-terminating proxy on this host (trusted by uvicorn), the request is https: Secure is set.
    proxied = _login_response(web_server, account, **{"X-Forwarded-Proto": "https"})
    assert _set_cookies(proxied)["galerne_session"]["galerne_session"]["secure"] is True


def test_pages_need_a_session_and_the_api_says_401(web_server: RunningServer) -> None:
    page = httpx.get(f"{web_server.base_url}/chat/settings", timeout=30)
    assert page.status_code == 303 and page.headers["location"] == "/chat/login?next=/chat/settings"
    api = httpx.get(f"{web_server.base_url}/chat/api/me", timeout=30)
    assert api.status_code == 401
    assert api.json()["type"] == "authentication_error" and api.json()["code"] == "not_logged_in"


def test_posts_without_the_csrf_token_are_refused(
    web_server: RunningServer, make_user: Callable[..., WebUserAccount]
) -> None:
    account = make_user()
    with http_login(web_server, account) as client:
        me = client.get("/chat/api/me").json()
        assert me["email"] == account.email
        for token in (None, "wrong-token-of-the-right-length-000000000"):
            data = {"display_name": "Forged", "locale": ""}
            if token is not None:
                data["csrf_token"] = token
            refused = client.post("/chat/settings/profile", data=data)
            assert refused.status_code == 403
            assert refused.json()["code"] == "csrf_failed"
        assert client.post("/chat/logout").status_code == 403  # logging someone out is a change too
        assert client.get("/chat/api/me").json()["display_name"] != "Forged"
        # The page's token works, as a form field or as the header scripts use.
        page_token = csrf_of(client.get("/chat/settings").text)
        assert page_token == me["csrf_token"]
        saved = client.post("/chat/settings/profile", data={"display_name": "Real", "csrf_token": page_token})
        assert saved.status_code == 303
        by_header = client.post("/chat/settings/profile", data={"display_name": "Real 2"},
                                headers={"X-CSRF-Token": page_token})
        assert by_header.status_code == 303
        assert client.get("/chat/api/me").json()["display_name"] == "Real 2"


def test_a_session_token_of_another_user_does_not_pass(
    web_server: RunningServer, make_user: Callable[..., WebUserAccount]
) -> None:
    alice, mallory = make_user("alice"), make_user("mallory")
    with http_login(web_server, alice) as alice_client, http_login(web_server, mallory) as mallory_client:
        mallory_token = mallory_client.get("/chat/api/me").json()["csrf_token"]
        refused = alice_client.post("/chat/settings/profile", data={"display_name": "x", "csrf_token": mallory_token})
        assert refused.status_code == 403


def test_login_form_needs_its_csrf_cookie(web_server: RunningServer, make_user: Callable[..., WebUserAccount]) -> None:
    account = make_user()
    forged = httpx.post(f"{web_server.base_url}/chat/login", timeout=30,
                        data={"email": account.email, "password": account.password, "csrf_token": "x" * 43})
    assert forged.status_code == 403


def test_five_wrong_passwords_then_429_with_retry_after(
    web_server: RunningServer, make_user: Callable[..., WebUserAccount]
) -> None:
    account = make_user()
    with httpx.Client(base_url=web_server.base_url, timeout=30) as client:
        token = csrf_of(client.get("/chat/login").text)
        started = time.monotonic()
        num_failures = 0
        while True:
            wrong = client.post("/chat/login", data={"email": account.email, "password": "not it at all",
                                                     "csrf_token": token})
            if wrong.status_code == 429:
                break
            assert wrong.status_code == 401 and "Wrong e-mail or password." in wrong.text
            num_failures += 1
            # 5 a minute, as a bucket refilling one try every 12 s: a slow machine's hashing may earn one more.
            assert num_failures <= 5 + (time.monotonic() - started) // 12
        assert num_failures >= 5
        limited = client.post("/chat/login", data={"email": account.email, "password": PASSWORD,
                                                   "csrf_token": token})
        assert limited.status_code == 429  # even the right password waits
        assert 1 <= int(limited.headers["retry-after"]) <= 12
        assert "Too many failed logins" in limited.text
        assert "galerne_session" not in limited.headers.get("set-cookie", "")


def test_logout_ends_the_session_on_the_server(
    web_server: RunningServer, make_user: Callable[..., WebUserAccount]
) -> None:
    account = make_user()
    with http_login(web_server, account) as client:
        stolen_cookie = client.cookies["galerne_session"]
        token = client.get("/chat/api/me").json()["csrf_token"]
        out = client.post("/chat/logout", data={"csrf_token": token})
        assert out.status_code == 303 and out.headers["location"] == "/chat/login"
        assert client.get("/chat/api/me").status_code == 401
    replayed = httpx.get(f"{web_server.base_url}/chat/api/me", cookies={"galerne_session": stolen_cookie}, timeout=30)
    assert replayed.status_code == 401


def test_pages_forbid_inline_scripts_and_framing(web_server: RunningServer) -> None:
    page = httpx.get(f"{web_server.base_url}/chat/login", timeout=30)
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    css = httpx.get(f"{web_server.base_url}/chat/static/chat.css", timeout=30)
    assert css.status_code == 200 and "focus-visible" in css.text
