""" "Guaranteed" holds on every path, over real HTTP on the real model: no stop string cuts a constrained
reply, no reply that breaks its schema goes out as a success, hostile schemas are clear 400s, a cut
tool call is never shown as text, and refusals say what a client can change."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.conftest import RunningServer
from tests.structured.test_corpus import CORPUS

ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
REF_LOOP = {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}
INTERNALS = ("<state>", "lexer", "coerce_one_of", "NoExtensionBias", "Parser:", "grammar>")


def _json_body(model_id: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": model_id,
        "messages": [{"role": "user", "content": "Describe a city as JSON."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": schema, **extra.pop("js", {})},
        },
        "temperature": 0,
        "max_tokens": 200,
        **extra,
    }


def _tool_body(model_id: str, parameters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    tool = {"type": "function", "function": {"name": "f", "description": "A tool", "parameters": parameters}}
    return {"model": model_id, "messages": ASK, "tools": [tool], "tool_choice": "required", "temperature": 0,
            "max_tokens": 60, **extra}  # fmt: skip


def _refusal(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["object"] == "error" and body["type"] == "invalid_request_error"
    message = str(body["message"])
    assert not any(internal in message for internal in INTERNALS), message
    return message


def _valid(text: str, schema: dict[str, Any]) -> None:
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert not list(validator.iter_errors(json.loads(text))), text


# -------------------------------------------------------------------------------- stop vs a constraint


def test_stop_with_a_json_response_format_is_a_400(server: RunningServer, model_id: str) -> None:
    body = _json_body(model_id, {"type": "object", "properties": {"name": {"type": "string"}}}, stop=['"'])
    response = server.post("/v1/chat/completions", json=body)
    message = _refusal(response)
    assert response.json()["param"] == "stop" and "Remove `stop`" in message


def test_stop_with_a_forced_tool_call_is_a_400(server: RunningServer, model_id: str) -> None:
    body = {"model": model_id, "messages": ASK, "tools": [WEATHER_TOOL], "tool_choice": "required", "stop": ["}"]}
    response = server.post("/v1/chat/completions", json=body)
    assert "tool_choice: auto" in _refusal(response)


# A conversation where the model already called the tool once: under `auto` it calls it again.
CALLED_BEFORE = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "abcdefgh0", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "abcdefgh0", "content": "Sunny"},
    {"role": "assistant", "content": "It is sunny in Paris."},
    {"role": "user", "content": "Weather in Rome?"},
]  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
def test_stop_under_auto_never_cuts_a_call(server: RunningServer, model_id: str, stream: bool) -> None:
    body = {"model": model_id, "messages": CALLED_BEFORE, "tools": [WEATHER_TOOL], "temperature": 0,
            "max_tokens": 60, "stop": ['"', "}"], "stream": stream}  # fmt: skip
    choice = _complete(server, body)
    assert choice["finish_reason"] == "tool_calls", choice
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather"
    _valid(call["arguments"], WEATHER_TOOL["function"]["parameters"])
    assert not choice["message"]["content"]


def test_stop_under_auto_still_cuts_a_text_reply(server: RunningServer, model_id: str) -> None:
    body = {"model": model_id, "messages": [{"role": "user", "content": "Say hello to Paris."}],
            "tools": [WEATHER_TOOL], "temperature": 0, "max_tokens": 60, "stop": [" "]}  # fmt: skip
    choice = _complete(server, body)
    assert choice["finish_reason"] == "stop" and " " not in choice["message"]["content"]


# -------------------------------------------------------------------------------- keywords the grammar cannot enforce


def test_a_keyword_the_grammar_cannot_enforce_is_refused_not_ignored(server: RunningServer, model_id: str) -> None:
    # llguidance does not implement `uniqueItems`: the grammar could write ["a","a"]. Refused, in plain words.
    schema = {"type": "array", "items": {"const": "a"}, "minItems": 2, "maxItems": 2, "uniqueItems": True}
    message = _refusal(server.post("/v1/chat/completions", json=_json_body(model_id, schema)))
    assert "`uniqueItems` cannot be enforced" in message and "remove it" in message


def test_a_format_nobody_checks_is_an_annotation(server: RunningServer, model_id: str) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "string", "format": "int64", "maxLength": 8}},
              "required": ["id"], "additionalProperties": False}  # fmt: skip
    response = server.post("/v1/chat/completions", json=_json_body(model_id, schema))
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    _valid(choice["message"]["content"], schema)


# -------------------------------------------------------------------------------- hostile schemas


def test_a_ref_loop_is_a_400_naming_it(server: RunningServer, model_id: str) -> None:
    message = _refusal(server.post("/v1/chat/completions", json=_json_body(model_id, REF_LOOP)))
    assert "$ref" in message and "#/$defs/a -> #/$defs/b -> #/$defs/a" in message
    message = _refusal(server.post("/v1/chat/completions", json=_tool_body(model_id, REF_LOOP)))
    assert "$ref" in message


@pytest.mark.parametrize("keyword", ["items", "anyOf"])
def test_a_schema_nested_hundreds_deep_is_a_400_with_the_limit(
    server: RunningServer, model_id: str, keyword: str
) -> None:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(250):
        schema = {"type": "array", "items": schema} if keyword == "items" else {"anyOf": [schema, {"type": "null"}]}
    response = server.post("/v1/chat/completions", json=_json_body(model_id, schema))
    assert "64 levels" in _refusal(response)
    response = server.post(
        "/v1/chat/completions", json=_tool_body(model_id, {"type": "object", "properties": {"x": schema}})
    )
    assert "64 levels" in _refusal(response)


@pytest.mark.parametrize("where", ["top", "second_property", "tool"])
def test_a_huge_pattern_is_a_400_in_plain_words(server: RunningServer, model_id: str, where: str) -> None:
    huge = {"type": "string", "pattern": "^a{1000000}$"}
    nested = {"type": "object", "properties": {"n": {"type": "integer"}, "code": huge}, "required": ["n", "code"]}
    schema = huge if where == "top" else nested
    body = _tool_body(model_id, nested) if where == "tool" else _json_body(model_id, schema)
    message = _refusal(server.post("/v1/chat/completions", json=body))
    assert "pattern" in message and "smaller" in message


# -------------------------------------------------------------------------------- a cut tool call


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_cut_by_max_tokens_is_neither_text_nor_a_call(
    server: RunningServer, model_id: str, stream: bool
) -> None:
    body = {"model": model_id, "messages": ASK, "tools": [WEATHER_TOOL], "temperature": 0, "max_tokens": 3,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "stream": stream}  # fmt: skip
    choice = _complete(server, body)
    assert choice["finish_reason"] == "length"
    assert not choice["message"]["content"]
    assert not choice["message"].get("tool_calls")


# -------------------------------------------------------------------------------- refusals a client can act on


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "minProperties": 1},
        {"type": "object", "properties": {"a": {"type": "string", "maxLength": 5}}, "required": ["a", "b"]},
    ],
    ids=["min_properties", "required_not_declared"],
)
def test_strict_mode_does_not_make_a_schema_unsatisfiable(
    server: RunningServer, model_id: str, schema: dict[str, Any]
) -> None:
    response = server.post("/v1/chat/completions", json=_json_body(model_id, schema, js={"strict": True}))
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    if choice["finish_reason"] == "stop":
        _valid(choice["message"]["content"], schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"oneOf": [{"type": "string", "maxLength": 10}, {"type": "integer"}]},
        {
            "oneOf": [
                {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "integer"}},
                 "required": ["kind", "r"], "additionalProperties": False},
                {"$ref": "#/$defs/square"},
            ],
            "$defs": {"square": {"type": "object",
                                 "properties": {"kind": {"enum": ["square"]}, "side": {"type": "integer"}},
                                 "required": ["kind", "side"], "additionalProperties": False}},
        },
    ],
    ids=["disjoint_types", "discriminator"],
)  # fmt: skip
def test_a_one_of_whose_branches_cannot_overlap_is_enforced(
    server: RunningServer, model_id: str, schema: dict[str, Any]
) -> None:
    response = server.post("/v1/chat/completions", json=_json_body(model_id, schema))
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    _valid(choice["message"]["content"], schema)


def test_a_one_of_that_may_overlap_is_refused_with_what_to_change(server: RunningServer, model_id: str) -> None:
    schema = {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}
    message = _refusal(server.post("/v1/chat/completions", json=_json_body(model_id, schema)))
    assert "anyOf" in message and "discriminator" in message


# -------------------------------------------------------------------------------- helpers


def _events(server: RunningServer, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, headers=server.headers,
                      timeout=120) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def _complete(server: RunningServer, body: dict[str, Any]) -> dict[str, Any]:
    """One choice as the client sees it, assembled from the stream when `body` streams."""
    if not body.get("stream"):
        response = server.post("/v1/chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return dict(response.json()["choices"][0])
    content, calls, finish = "", [], None
    for event in _events(server, body):
        assert event.get("object") != "error", event
        for choice in event["choices"]:
            content += choice["delta"].get("content") or ""
            calls += choice["delta"].get("tool_calls") or []
            finish = choice["finish_reason"] or finish
    return {"message": {"content": content, "tool_calls": calls}, "finish_reason": finish}


# -------------------------------------------------------------------------------- the budget closes a reply

KEYWORDS = {"type": "object", "properties": {"title": {"type": "string"},
            "keywords": {"type": "array", "items": {"type": "string"}}}, "required": ["title", "keywords"]}  # fmt: skip


@pytest.mark.parametrize("max_tokens", [16, 28])  # well under what the model writes: it must be cut
def test_a_reply_running_out_of_budget_is_closed_valid_and_marked_length(
    server: RunningServer, model_id: str, max_tokens: int
) -> None:
    body = _json_body(model_id, KEYWORDS, max_tokens=max_tokens)
    body["messages"] = [{"role": "user", "content": "A restaurant review blog as JSON: a title and many keywords."}]
    response = server.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"  # the budget ended it, not the model
    _valid(choice["message"]["content"], KEYWORDS)


def test_a_tool_call_running_out_of_budget_comes_back_whole(server: RunningServer, model_id: str) -> None:
    body = {"model": model_id, "messages": ASK, "tools": [WEATHER_TOOL], "temperature": 0, "max_tokens": 20,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}  # fmt: skip
    choice = _complete(server, body)
    assert choice["finish_reason"] == "length" and not choice["message"]["content"]
    call = choice["message"]["tool_calls"][0]["function"]
    _valid(call["arguments"], WEATHER_TOOL["function"]["parameters"])


def test_sampled_replies_of_a_deep_schema_closed_by_the_budget_all_parse(server: RunningServer, model_id: str) -> None:
    """Sampling takes each reply somewhere else: a new talk or track opened late, an e-mail or a URI half
    written when the budget comes. Each must still end valid (docs/structured.md, engines/llamacpp/closing)."""
    [entry] = [entry for entry in CORPUS if entry["name"] == "conference_program_deep"]

    async def one(client: httpx.AsyncClient, seed: int, max_tokens: int) -> dict[str, Any]:
        body = _json_body(model_id, entry["schema"], temperature=0.8, random_seed=seed, max_tokens=max_tokens)
        body["messages"] = [{"role": "user", "content": entry["prompt"]}]
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json()["choices"][0])

    async def run() -> list[dict[str, Any]]:
        async with server.client(timeout=600) as client:
            replies = [one(client, seed, budget) for seed in range(6) for budget in (160, 240)]
            return list(await asyncio.gather(*replies))

    choices = asyncio.run(run())
    assert all(choice["finish_reason"] == "length" for choice in choices)  # it writes 330-620 tokens unbounded
    for choice in choices:
        _valid(choice["message"]["content"], entry["schema"])
