"""Le Chat's conversations in a real headless Chromium against a real server and the real model: a streamed
answer, switching model, stop, regenerate, edit-and-resend, reload, search, delete; hostile markup inert
in the browser; another user's conversation a 404 page. Screenshots at desktop and phone width."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import RunningServer, run_cli, stop_server
from tests.web.chat_server import SECOND_MODEL, start_chat_server
from tests.web.conftest import PASSWORD, PHONE, WebUserAccount, create_user, screenshot

# Counts how often the streaming reply's HTML is replaced before it is done, and any dialog a script opens.
_WATCH = """
window.__updates = 0;
new MutationObserver((records) => {
  for (const record of records) {
    const item = record.target.closest && record.target.closest("li.message.assistant.streaming");
    if (item) { window.__updates += 1; return; }
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_chat_server(tmp_path_factory.mktemp("galerne-chat-browser"), max_tokens=160)
    yield running
    stop_server(running)


def _log_in(context: Any, server: RunningServer, account: WebUserAccount) -> Any:
    page = context.new_page()
    page.goto(f"{server.base_url}/chat/login")
    page.fill("#email", account.email)
    page.fill("#password", account.password)
    page.press("#password", "Enter")
    page.wait_for_url(f"{server.base_url}/chat")
    return page


def _send(page: Any, text: str) -> None:
    page.get_by_test_id("prompt").fill(text)
    page.get_by_test_id("prompt").press("Enter")


def _wait_done(page: Any, count: int) -> Any:
    """The `count`-th assistant message, once finished (its meta line, model and tokens, is shown)."""
    page.wait_for_function(
        "n => document.querySelectorAll('li.message.assistant .meta').length >= n", arg=count, timeout=120_000
    )
    return page.locator("li.message.assistant").nth(count - 1)


def test_a_conversation_from_first_message_to_deletion(
    web_server: RunningServer, new_context: Callable[..., Any], make_user: Callable[..., WebUserAccount]
) -> None:
    context = new_context()
    context.add_init_script(_WATCH)
    page = _log_in(context, web_server, make_user())
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    assert page.get_by_test_id("model").input_value() == "smollm2-135m-instruct"

    _send(page, "What is the capital of France?")
    page.wait_for_url(re.compile(r".*/chat/c/[0-9a-f]{32}$"))
    first = _wait_done(page, 1)
    # The reply was drawn while it streamed (a short answer can finish before a locator would poll for the
    # streaming box, so the page's own observer counts the updates made to it before it was done).
    assert page.evaluate("window.__updates") >= 1
    assert first.locator(".message-body").inner_text().strip()
    meta = first.locator(".meta").inner_text()
    assert "smollm2-135m-instruct" in meta and "tokens" in meta
    conversation_url = page.url
    screenshot(page, "chat-conversation-desktop")

    # Switch model mid-conversation: the next answer is written, and labelled, by the other one.
    page.get_by_test_id("model").select_option(SECOND_MODEL)
    page.wait_for_load_state("networkidle")
    _send(page, "And the capital of Italy?")
    assert SECOND_MODEL in _wait_done(page, 2).locator(".meta").inner_text()

    # Stop a long answer: it ends at once, marked as stopped, and what was generated is kept.
    page.get_by_test_id("model").select_option("smollm2-135m-instruct")
    page.wait_for_load_state("networkidle")
    _send(page, "Write a very long story about a lighthouse keeper and his cat, with many chapters.")
    page.wait_for_function(
        "() => { const r = document.querySelector('li.message.assistant.streaming .message-body');"
        " return r && r.textContent.trim().length > 0; }",
        timeout=60_000,
    )
    page.get_by_test_id("stop").click()
    stopped = _wait_done(page, 3)
    assert "stopped" in stopped.locator(".meta").inner_text()
    assert page.get_by_test_id("send").is_visible()

    # Regenerate: the last answer is replaced, not added to.
    page.get_by_test_id("regenerate").click()
    regenerated = _wait_done(page, 3)
    assert "tokens" in regenerated.locator(".meta").inner_text()
    assert page.locator("li.message.assistant").count() == 3

    # Edit and resend the last message.
    page.get_by_test_id("edit").click()
    assert page.get_by_test_id("prompt").input_value().startswith("Write a very long story")
    page.get_by_test_id("prompt").fill("Say hello in French.")
    page.get_by_test_id("prompt").press("Enter")
    _wait_done(page, 3)
    assert page.locator("li.message.user").last.inner_text().strip() == "Say hello in French."

    # Reload: the history is there, rendered by the server.
    page.goto(conversation_url)
    assert page.locator("li.message.user").count() == 3 and page.locator("li.message.assistant").count() == 3
    assert "Say hello in French." in page.locator("li.message.user").last.inner_text()
    screenshot(page, "chat-history-desktop")

    # Search by a word of the content (and find nothing for a word never written).
    page.get_by_test_id("search").fill("lighthouse")
    page.get_by_test_id("search").press("Enter")
    page.wait_for_url("**/chat/search?q=*")
    assert page.locator(".conversation-list a").count() == 0  # "lighthouse" was edited away
    page.get_by_test_id("search").fill("Italy")
    page.get_by_test_id("search").press("Enter")
    page.wait_for_url("**/chat/search?q=Italy")
    assert page.locator(".conversation-list a").count() == 1
    page.locator(".conversation-list a").first.click()
    page.wait_for_url(conversation_url)

    # Phone width: the same page, readable.
    phone = new_context(viewport=PHONE)
    phone_page = _log_in(phone, web_server, make_user())
    phone_page.goto(f"{web_server.base_url}/chat")
    screenshot(phone_page, "chat-new-phone")
    page.set_viewport_size(PHONE)
    page.reload()
    screenshot(page, "chat-conversation-phone")
    page.set_viewport_size({"width": 1280, "height": 800})

    # Delete: confirmed, gone with its messages.
    page.get_by_test_id("delete").click()
    page.wait_for_url(f"{web_server.base_url}/chat")
    assert dialogs and "Delete" in dialogs[-1]
    assert page.goto(conversation_url).status == 404
    assert page.get_by_role("heading", level=1).inner_text() == "Conversation not found"


def test_hostile_markup_is_inert_in_the_browser(
    web_server: RunningServer, new_context: Callable[..., Any], make_user: Callable[..., WebUserAccount]
) -> None:
    context = new_context()
    page = _log_in(context, web_server, make_user())
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    hostile = (
        "<script>window.__owned = 1; alert('script')</script>\n\n"
        '<img src="/nope" onerror="window.__owned = 2; alert(\'img\')">\n\n'
        "[click me](javascript:window.__owned=3;alert('link'))\n\n"
        '<a href="javascript:alert(4)">raw link</a>'
    )
    _send(page, hostile)
    _wait_done(page, 1)

    def check() -> None:
        messages = page.locator("#messages")
        assert messages.locator("script").count() == 0
        assert messages.locator("img").count() == 0
        assert messages.locator("[onerror], [onclick], [onload]").count() == 0
        assert messages.locator('a[href^="javascript:" i]').count() == 0
        assert page.evaluate("window.__owned") is None
        assert "<script>" in messages.locator("li.message.user").first.inner_text()  # shown as text
        for link in messages.locator("a").all():
            link.click(no_wait_after=True)
        page.wait_for_timeout(300)
        assert page.evaluate("window.__owned") is None
        assert dialogs == []

    check()  # as streamed in
    page.reload()
    check()  # as rendered by the server


def test_another_users_conversation_is_a_404_page(
    web_server: RunningServer, new_context: Callable[..., Any], make_user: Callable[..., WebUserAccount]
) -> None:
    owner = _log_in(new_context(), web_server, make_user("owner"))
    _send(owner, "A secret plan.")
    owner.wait_for_url(re.compile(r".*/chat/c/[0-9a-f]{32}$"))
    _wait_done(owner, 1)
    intruder = _log_in(new_context(locale="fr-FR"), web_server, make_user("intruder"))
    response = intruder.goto(owner.url)
    assert response is not None and response.status == 404
    assert "A secret plan" not in intruder.content()
    screenshot(intruder, "chat-not-found-fr")


def test_error_states_say_what_to_do(web_server: RunningServer, new_context: Callable[..., Any]) -> None:
    """A rate limit shows the wait and keeps the message for Retry; a lost connection keeps the unsent text."""
    run_cli(web_server.home, "projects", "create", "browser-limited", "--rpm", "1", env=web_server.env)
    account = create_user(web_server, f"limited-{os.getpid()}-{os.urandom(3).hex()}@example.org", PASSWORD,
                          "--project", "browser-limited")
    page = _log_in(new_context(), web_server, account)
    _send(page, "Hello!")
    _wait_done(page, 1)
    _send(page, "Hello again!")
    status = page.get_by_test_id("status")
    status.wait_for()
    assert re.fullmatch(r"Too many requests: try again in \d+ s\. Retry", status.inner_text().strip())
    assert page.get_by_test_id("retry").is_visible()
    assert page.locator("li.message.user").count() == 2  # kept on the server, for the retry
    assert page.get_by_test_id("prompt").input_value() == ""
    screenshot(page, "chat-rate-limited")

    page.context.set_offline(True)
    _send(page, "Are you there?")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=status]').textContent.includes('The connection was lost.')"
    )
    assert page.get_by_test_id("prompt").input_value() == "Are you there?"  # nothing typed is lost
    assert page.get_by_test_id("retry").is_visible()
    page.context.set_offline(False)
