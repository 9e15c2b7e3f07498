"""Le Chat's accounts in a real headless Chromium: sign up, log out, log in, settings, the five languages,
and screenshots of the login and sign-up pages at desktop and phone width."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import RunningServer
from tests.web.conftest import PASSWORD, PHONE, WebUserAccount, screenshot


def _fresh_email(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{os.urandom(4).hex()}@example.org"


def _log_in(page: Any, server: RunningServer, account: WebUserAccount) -> None:
    page.goto(f"{server.base_url}/chat/login")
    page.fill("#email", account.email)
    page.fill("#password", account.password)
    page.press("#password", "Enter")  # the keyboard is enough
    page.wait_for_url(f"{server.base_url}/chat")


def test_sign_up_log_out_and_log_in_again(web_server: RunningServer, new_context: Callable[..., Any]) -> None:
    page = new_context().new_page()
    email = _fresh_email("newcomer")
    page.goto(f"{web_server.base_url}/chat")
    page.wait_for_url(re.compile(r".*/chat/login\?next=/chat$"))
    page.get_by_role("link", name="Sign up").click()
    page.fill("#email", email)
    page.fill("#display_name", "Nadia")
    page.fill("#password", PASSWORD)
    page.fill("#password_again", PASSWORD)
    page.get_by_role("button", name="Create the account").click()
    page.wait_for_url(f"{web_server.base_url}/chat")
    assert page.get_by_role("heading", level=1).inner_text() == "Welcome, Nadia"
    session_cookie = next(c for c in page.context.cookies() if c["name"] == "galerne_session")
    assert session_cookie["httpOnly"] is True and session_cookie["sameSite"] == "Lax"
    assert page.evaluate("document.cookie").find("galerne_session") == -1  # scripts cannot read it

    page.get_by_test_id("logout").click()
    page.wait_for_url("**/chat/login")
    page.goto(f"{web_server.base_url}/chat")
    page.wait_for_url(re.compile(r".*/chat/login\?next=/chat$"))

    page.fill("#email", email)
    page.fill("#password", "a wrong password")
    page.press("#password", "Enter")
    assert page.get_by_test_id("error").inner_text() == "Wrong e-mail or password."
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    page.wait_for_url(f"{web_server.base_url}/chat")
    assert "Nadia" in page.get_by_role("heading", level=1).inner_text()


def test_sign_up_mistakes_are_shown_in_the_form(web_server: RunningServer, new_context: Callable[..., Any]) -> None:
    page = new_context().new_page()
    page.goto(f"{web_server.base_url}/chat/signup")
    page.fill("#email", _fresh_email("typo"))
    page.fill("#password", PASSWORD)
    page.fill("#password_again", PASSWORD + "!")
    page.get_by_role("button", name="Create the account").click()
    assert page.get_by_test_id("error").inner_text() == "The two passwords differ."
    assert page.input_value("#email").startswith("typo-")  # what was typed is kept


@pytest.mark.parametrize(
    ("locale", "log_in", "password", "sign_up"),
    [
        ("fr-FR", "Se connecter", "Mot de passe", "Créer un compte"),
        ("de-DE", "Anmelden", "Passwort", "Registrieren"),
        ("es-ES", "Iniciar sesión", "Contraseña", "Registrarse"),
        ("it-IT", "Accedi", "Password", "Registrati"),
    ],
)
def test_the_ui_speaks_the_browsers_language(
    web_server: RunningServer, new_context: Callable[..., Any], locale: str, log_in: str, password: str, sign_up: str
) -> None:
    page = new_context(locale=locale).new_page()
    page.goto(f"{web_server.base_url}/chat/login")
    assert page.get_by_role("heading", level=1).inner_text() == log_in
    assert page.locator("label[for=password]").inner_text() == password
    assert page.get_by_role("link", name=sign_up).is_visible()
    assert page.locator("html").get_attribute("lang") == locale[:2]
    page.fill("#email", _fresh_email("nobody"))
    page.fill("#password", "wrong password")
    page.press("#password", "Enter")
    assert page.get_by_test_id("error").inner_text() != "Wrong e-mail or password."  # translated too


def test_french_user_switches_language_and_keeps_it_in_settings(
    web_server: RunningServer, new_context: Callable[..., Any], make_user: Callable[..., WebUserAccount]
) -> None:
    account = make_user("polyglot")
    page = new_context(locale="fr-FR").new_page()
    _log_in(page, web_server, account)
    assert page.get_by_role("link", name="Paramètres").is_visible()
    page.select_option("#language-select", "de")  # the switcher submits on change
    page.wait_for_load_state()
    page.get_by_role("link", name="Einstellungen").wait_for()
    page.get_by_role("link", name="Einstellungen").click()
    assert page.locator("#locale").input_value() == "de"  # saved as the user's setting
    page.fill("#display_name", "Pat")
    page.get_by_role("button", name="Speichern").click()
    assert page.get_by_role("status").inner_text() == "Ihr Profil ist gespeichert."

    other_browser = new_context(locale="es-ES").new_page()  # the setting follows the user to another browser
    _log_in(other_browser, web_server, account)
    assert other_browser.get_by_role("link", name="Einstellungen").is_visible()


def test_password_change_in_settings(
    web_server: RunningServer, new_context: Callable[..., Any], make_user: Callable[..., WebUserAccount]
) -> None:
    account = make_user("rotator")
    page = new_context().new_page()
    _log_in(page, web_server, account)
    page.goto(f"{web_server.base_url}/chat/settings")
    page.fill("#current_password", "not my password")
    page.fill("#new_password", "brand new password")
    page.fill("#new_password_again", "brand new password")
    page.get_by_role("button", name="Change the password").click()
    assert page.get_by_test_id("error").inner_text() == "The current password is wrong."
    page.fill("#current_password", account.password)
    page.fill("#new_password", "brand new password")
    page.fill("#new_password_again", "brand new password")
    page.get_by_role("button", name="Change the password").click()
    assert "Your password is changed" in page.get_by_role("status").inner_text()
    page.get_by_test_id("logout").click()
    _log_in(page, web_server, WebUserAccount(account.email, "brand new password", account.id, account.project))


def test_keyboard_focus_is_visible(web_server: RunningServer, new_context: Callable[..., Any]) -> None:
    page = new_context().new_page()
    page.goto(f"{web_server.base_url}/chat/login")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.focus("#password")
    page.keyboard.press("Shift+Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert page.evaluate("document.activeElement.id") == "email" and outline == "solid"


def test_screenshots_of_login_and_sign_up_at_desktop_and_phone_width(
    web_server: RunningServer, new_context: Callable[..., Any]
) -> None:
    for label, options in (("desktop", {}), ("phone", {"viewport": PHONE, "is_mobile": True, "has_touch": True})):
        page = new_context(**options).new_page()
        for name in ("login", "signup"):
            page.goto(f"{web_server.base_url}/chat/{name}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= page.viewport_size["width"], f"{name} scrolls sideways at {label} width"
            assert screenshot(page, f"chat-{name}-{label}").stat().st_size > 5_000
