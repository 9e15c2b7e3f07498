"""Documents in Le Chat on a real server serving SmolLM2 and the all-MiniLM-L6-v2 embedder: the
`/chat/api/conversations/{id}/files` routes over HTTP (another user's conversation or file a 404, bad files a
4xx in la Plateforme's error shape, CSRF, the upload size limits), and in a real headless Chromium: attach two
documents (file input and a real drop), see them ready, remove one, ask, see the cited passage as text under the
answer, and find it all again after a reload."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, stop_server
from tests.web.chat_server import csrf_header, stream_events
from tests.web.conftest import PHONE, WebUserAccount, http_login, screenshot, start_web_server

MAX_REQUEST_BYTES = 64 * 1024
MAX_FILE_BYTES = 512 * 1024
BADGES = (
    "Security desk\n\nLost badges are replaced at the badge office in building C, <i>room 214</i>. "
    "A replacement badge costs 15 euros and is ready the same day.\n"
)
CANTEEN = "# Canteen\n\nThe canteen on the ground floor opens at 11:30 and closes at 14:00.\n"


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_web_server(
        tmp_path_factory.mktemp("galerne-attach"),
        signup="open",
        models="smollm2-135m-instruct,all-minilm-l6-v2",
        chat_max_tokens="48",
        max_request_bytes=str(MAX_REQUEST_BYTES),
        max_file_bytes=str(MAX_FILE_BYTES),
    )
    yield running
    stop_server(running)


def _conversation(client: httpx.Client, headers: dict[str, str]) -> str:
    response = client.post("/chat/api/conversations", json={}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _attach(client: httpx.Client, conversation_id: str, name: str, data: bytes, headers: dict[str, str]) -> Any:
    return client.post(
        f"/chat/api/conversations/{conversation_id}/files", files={"file": (name, data)}, headers=headers, timeout=300
    )


def test_the_files_routes(web_server: RunningServer, make_user: Callable[..., WebUserAccount]) -> None:
    with http_login(web_server, make_user("owner")) as owner:
        headers = csrf_header(owner)
        conversation_id = _conversation(owner, headers)
        attached = _attach(owner, conversation_id, "badges.txt", BADGES.encode(), headers)
        assert attached.status_code == 201, attached.text
        file = attached.json()
        assert file["filename"] == "badges.txt" and file["status"] == "ready" and file["num_chunks"] >= 1
        base = f"/chat/api/conversations/{conversation_id}/files"
        assert [f["id"] for f in owner.get(base).json()["data"]] == [file["id"]]
        assert [f["id"] for f in owner.get(f"/chat/api/conversations/{conversation_id}").json()["files"]] == [
            file["id"]
        ]

        # A document larger than any other request body, but within the upload limit, is taken.
        big = ("The archive room keeps every signed contract for ten years. " * 1800).encode()
        assert MAX_REQUEST_BYTES < len(big) < MAX_FILE_BYTES
        taken = _attach(owner, conversation_id, "archive.txt", big, headers)
        assert taken.status_code == 201, taken.text
        assert owner.delete(f"{base}/{taken.json()['id']}", headers=headers).status_code == 204
        too_big = _attach(owner, conversation_id, "huge.txt", b"a " * MAX_FILE_BYTES, headers)
        assert too_big.status_code == 413 and too_big.json()["object"] == "error"

        # Files the server cannot read: the error says why, in the shape the page shows.
        for name, data, code in [
            ("tool.exe", b"MZ\x90\x00", "unsupported_file_type"),
            ("empty.txt", b"", "empty_document"),
        ]:
            refused = _attach(owner, conversation_id, name, data, headers)
            assert refused.status_code == 400, refused.text
            assert refused.json()["code"] == code and refused.json()["message"]
        assert len(owner.get(base).json()["data"]) == 1  # nothing of the refused ones was kept

        # Without the CSRF token: refused, nothing stored.
        assert _attach(owner, conversation_id, "c.txt", CANTEEN.encode(), {}).status_code == 403
        assert len(owner.get(base).json()["data"]) == 1

    with http_login(web_server, make_user("intruder")) as intruder:
        other = csrf_header(intruder)
        own_conversation = _conversation(intruder, other)
        answers = {
            "upload": _attach(intruder, conversation_id, "mine.txt", CANTEEN.encode(), other),
            "list": intruder.get(base),
            "remove": intruder.delete(f"{base}/{file['id']}", headers=other),
            "remove through own conversation": intruder.delete(
                f"/chat/api/conversations/{own_conversation}/files/{file['id']}", headers=other
            ),
        }
        for action, response in answers.items():
            assert response.status_code == 404, (action, response.text)
            assert response.json()["object"] == "error", action


def test_a_grounded_reply_keeps_its_references(
    web_server: RunningServer, make_user: Callable[..., WebUserAccount]
) -> None:
    with http_login(web_server, make_user()) as client:
        headers = csrf_header(client)
        conversation_id = _conversation(client, headers)
        assert _attach(client, conversation_id, "badges.txt", BADGES.encode(), headers).status_code == 201
        events = stream_events(
            client,
            f"/chat/api/conversations/{conversation_id}/messages",
            {"content": "Where are lost badges replaced?"},
            headers,
        )
        done = events[-1]
        assert done["type"] == "done", events[-1]
        references = done["message"]["references"]
        assert references and references[0]["filename"] == "badges.txt" and "room 214" in references[0]["text"]
        stored = client.get(f"/chat/api/conversations/{conversation_id}").json()["messages"]
        assert stored[-1]["references"] == references
        assert stored[0]["references"] == []


_DROP = """([name, text]) => {
  const data = new DataTransfer();
  data.items.add(new File([text], name, {type: "text/plain"}));
  const zone = document.querySelector("[data-testid=dropzone]");
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
  }
}"""


def _attachment(page: Any, name: str) -> Any:
    return page.locator("li.attachment", has=page.locator(".attachment-name", has_text=name))


def test_documents_in_the_browser(
    web_server: RunningServer, new_context: Callable[..., Any], make_user: Callable[..., WebUserAccount]
) -> None:
    account = make_user()
    page = new_context().new_page()
    page.goto(f"{web_server.base_url}/chat/login")
    page.fill("#email", account.email)
    page.fill("#password", account.password)
    page.press("#password", "Enter")
    page.wait_for_url(f"{web_server.base_url}/chat")

    # One through the drop zone's file input, one dropped as a real DataTransfer.
    page.get_by_test_id("attach-input").set_input_files(
        {"name": "canteen.md", "mimeType": "text/markdown", "buffer": CANTEEN.encode()}
    )
    page.evaluate(_DROP, ["badges.txt", BADGES])
    page.wait_for_url(re.compile(r".*/chat/c/[0-9a-f]{32}$"))  # attaching started the conversation
    page.wait_for_function("() => document.querySelectorAll('li.attachment.ready').length === 2", timeout=180_000)
    for name in ("canteen.md", "badges.txt"):
        state = _attachment(page, name).get_by_test_id("attachment-state").inner_text()
        assert state.startswith("ready") and "1 passage" in state, state
    screenshot(page, "chat-documents-desktop")

    _attachment(page, "canteen.md").get_by_test_id("remove-file").click()
    page.wait_for_function("() => document.querySelectorAll('li.attachment').length === 1")
    assert _attachment(page, "badges.txt").count() == 1

    page.get_by_test_id("prompt").fill("Where are lost badges replaced?")
    page.get_by_test_id("prompt").press("Enter")
    page.wait_for_function("() => document.querySelector('li.message.assistant .meta')", timeout=120_000)
    _check_sources(page)
    screenshot(page, "chat-sources-desktop")

    page.reload()
    assert page.locator("li.attachment.ready").count() == 1
    assert "badges.txt" in page.locator("li.attachment").inner_text()
    _check_sources(page)
    page.set_viewport_size(PHONE)
    assert page.get_by_test_id("remove-file").is_visible() and page.get_by_test_id("attach").is_visible()
    screenshot(page, "chat-documents-phone")


def _check_sources(page: Any) -> None:
    """One source, the dropped document, its passage collapsed, then shown as text (the `<i>` stays literal)."""
    answer = page.locator("li.message.assistant").last
    sources = answer.get_by_test_id("source")
    assert sources.count() == 1
    source = sources.first
    assert "badges.txt" in source.locator("summary").inner_text()
    assert re.search(r"score \d\.\d\d", source.locator("summary").inner_text())
    passage = source.locator(".passage")
    assert not passage.is_visible()
    source.locator("summary").click()
    assert passage.is_visible()
    assert "<i>room 214</i>" in passage.inner_text()
    assert passage.locator("i").count() == 0
