"""Le Chat's conversation endpoints over real HTTP on a real server: the reply stream, another user's
conversation answered 404 by every route, CSRF refusals, the rate limit with its wait, inert markup."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import RunningServer, run_cli, stop_server
from tests.web.chat_server import SECOND_MODEL, csrf_header, start_chat_server, stream_events
from tests.web.conftest import WebUserAccount, create_user, http_login

MAX_TOKENS = 160


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_chat_server(tmp_path_factory.mktemp("galerne-chat"), max_tokens=MAX_TOKENS)
    yield running
    stop_server(running)


def _new_conversation(client: httpx.Client, headers: dict[str, str], **body: str) -> str:
    response = client.post("/chat/api/conversations", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_a_reply_streams_and_is_kept(web_server: RunningServer, make_user: Callable[..., WebUserAccount]) -> None:
    with http_login(web_server, make_user()) as client:
        headers = csrf_header(client)
        conversation_id = _new_conversation(client, headers, system_prompt="Be brief.")
        events = stream_events(client, f"/chat/api/conversations/{conversation_id}/messages",
                               {"content": "What is the capital of France?"}, headers)
        assert events[0]["type"] == "start" and events[0]["user_message"]["role"] == "user"
        deltas = [event for event in events if event["type"] == "delta"]
        assert deltas and "html" in deltas[0]  # the first token is shown at once
        done = events[-1]
        assert done["type"] == "done"
        message = done["message"]
        assert message["content"] == "".join(event["text"] for event in deltas)
        assert message["model"] == "smollm2-135m-instruct" and message["completion_tokens"] > 0
        assert message["finish_reason"] in {"stop", "length"} and message["html"]

        # Switch the model mid-conversation: the next reply says which one wrote it.
        assert client.patch(f"/chat/api/conversations/{conversation_id}", json={"model": SECOND_MODEL},
                            headers=headers).status_code == 200
        events = stream_events(client, f"/chat/api/conversations/{conversation_id}/messages",
                               {"content": "And of Italy?"}, headers)
        assert events[-1]["message"]["model"] == SECOND_MODEL
        stored = client.get(f"/chat/api/conversations/{conversation_id}").json()
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "user", "assistant"]
        assert stored["title"] == "What is the capital of France?"
        page = client.get(f"/chat/c/{conversation_id}")
        assert page.status_code == 200 and "And of Italy?" in page.text and SECOND_MODEL in page.text

        exported = client.get(f"/chat/api/conversations/{conversation_id}/export?format=md")
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/markdown")
        assert "attachment" in exported.headers["content-disposition"]
        assert "## User\n\nAnd of Italy?" in exported.text
        as_json = client.get(f"/chat/api/conversations/{conversation_id}/export?format=json").json()
        assert len(as_json["messages"]) == 4


def test_another_users_conversation_is_404_for_every_route(
    web_server: RunningServer, make_user: Callable[..., WebUserAccount]
) -> None:
    owner_account = make_user("owner")
    with http_login(web_server, owner_account) as owner:
        conversation_id = _new_conversation(owner, csrf_header(owner), title="Private plans")
    with http_login(web_server, make_user("intruder")) as intruder:
        headers = csrf_header(intruder)
        base = f"/chat/api/conversations/{conversation_id}"
        answers = {
            "read": intruder.get(base),
            "page": intruder.get(f"/chat/c/{conversation_id}"),
            "rename": intruder.patch(base, json={"title": "mine"}, headers=headers),
            "export md": intruder.get(f"{base}/export?format=md"),
            "export json": intruder.get(f"{base}/export?format=json"),
            "send": intruder.post(f"{base}/messages", json={"content": "hi"}, headers=headers),
            "regenerate": intruder.post(f"{base}/regenerate", json={}, headers=headers),
            "delete": intruder.delete(base, headers=headers),
        }
        for what, response in answers.items():
            assert response.status_code == 404, (what, response.status_code, response.text)
            assert "Private plans" not in response.text
        assert answers["read"].json()["type"] == "invalid_request_error"
        assert intruder.get("/chat/search?q=Private").text.count(conversation_id) == 0
    with http_login(web_server, owner_account) as owner:  # ...and the owner still has it, untouched
        assert owner.get(f"/chat/api/conversations/{conversation_id}").json()["title"] == "Private plans"


def test_state_changes_without_the_csrf_token_are_refused(
    web_server: RunningServer, make_user: Callable[..., WebUserAccount]
) -> None:
    with http_login(web_server, make_user()) as client:
        headers = csrf_header(client)
        conversation_id = _new_conversation(client, headers)
        base = f"/chat/api/conversations/{conversation_id}"
        for response in (
            client.post("/chat/api/conversations", json={}),
            client.patch(base, json={"title": "x"}),
            client.delete(base),
            client.post(f"{base}/messages", json={"content": "hi"}),
            client.post(f"{base}/messages", json={"content": "hi"}, headers={"X-CSRF-Token": "forged" * 8}),
        ):
            assert response.status_code == 403 and response.json()["code"] == "csrf_failed"
        assert client.get(base).status_code == 200


def test_bad_input_is_a_clear_4xx(web_server: RunningServer, make_user: Callable[..., WebUserAccount]) -> None:
    with http_login(web_server, make_user()) as client:
        headers = csrf_header(client)
        conversation_id = _new_conversation(client, headers)
        base = f"/chat/api/conversations/{conversation_id}"
        unknown_model = client.post(f"{base}/messages", json={"content": "hi", "model": "gpt-9"}, headers=headers)
        assert unknown_model.status_code == 404 and unknown_model.json()["code"] == "model_not_found"
        empty = client.post(f"{base}/messages", json={"content": "  "}, headers=headers)
        assert empty.status_code == 400
        assert client.post(f"{base}/messages", json={"content": "a\u0000b"}, headers=headers).status_code == 400
        assert client.patch(base, json={"title": "x" * 201}, headers=headers).status_code == 422
        assert client.get("/chat/api/conversations?cursor=garbage").status_code == 400
        assert client.get("/chat/api/conversations/..%2F..%2Fetc").status_code == 404
        assert client.post(f"{base}/regenerate", json={}, headers=headers).status_code == 400  # nothing to answer


def test_a_rate_limited_project_gets_429_with_the_wait(web_server: RunningServer) -> None:
    run_cli(web_server.home, "projects", "create", "chat-limited", "--rpm", "1")
    account = create_user(web_server, "limited@example.org", "correct horse battery", "--project", "chat-limited")
    with http_login(web_server, account) as client:
        headers = csrf_header(client)
        conversation_id = _new_conversation(client, headers)
        base = f"/chat/api/conversations/{conversation_id}"
        first = stream_events(client, f"{base}/messages", {"content": "Hello"}, headers)
        assert first[-1]["type"] == "done"
        second = client.post(f"{base}/messages", json={"content": "Again"}, headers=headers)
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
        assert second.json()["type"] == "rate_limit_error"
        kept = client.get(base).json()["messages"]
        assert [m["content"] for m in kept if m["role"] == "user"] == ["Hello", "Again"]  # kept for the retry


def test_markup_in_messages_is_served_inert(
    web_server: RunningServer, make_user: Callable[..., WebUserAccount]
) -> None:
    with http_login(web_server, make_user()) as client:
        headers = csrf_header(client)
        conversation_id = _new_conversation(client, headers)
        hostile = '<script>alert(1)</script> <img src=x onerror="alert(2)"> [click](javascript:alert(3))'
        events = stream_events(client, f"/chat/api/conversations/{conversation_id}/messages",
                               {"content": hostile}, headers)
        html = events[0]["user_message"]["html"]
        assert "<script" not in html and "<img" not in html and 'href="javascript:' not in html
        page = client.get(f"/chat/c/{conversation_id}").text
        body = page[page.index('id="messages"'):]
        assert "<script>alert" not in body and "<img src=x" not in body and 'href="javascript:' not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
        assert "script-src 'self'" in client.get(f"/chat/c/{conversation_id}").headers["content-security-policy"]


def test_a_client_that_leaves_mid_answer_stops_it_and_its_part_is_kept(
    web_server: RunningServer, make_user: Callable[..., WebUserAccount]
) -> None:
    with http_login(web_server, make_user()) as client:
        headers = csrf_header(client)
        conversation_id = _new_conversation(client, headers)
        path = f"/chat/api/conversations/{conversation_id}/messages"
        body = {"content": "Write a very long story about a lighthouse keeper, in many chapters."}
        with client.stream("POST", path, json=body, headers=headers, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith('data: {"type": "delta"'):
                    break  # leaving the block drops the connection mid-answer
        deadline = time.monotonic() + 60
        while len(messages := client.get(f"/chat/api/conversations/{conversation_id}").json()["messages"]) < 2:
            assert time.monotonic() < deadline, "the cut-off answer was never stored"
            time.sleep(0.2)
        answer = messages[1]
        assert answer["role"] == "assistant" and answer["finish_reason"] == "cancelled"
        assert 0 < answer["completion_tokens"] < MAX_TOKENS
