"""A remote model whose upstream is another real Galerne serving SmolLM2: tools and `response_format` go through
the gateway and come back valid against their schemas, streamed or not; the upstream key comes from a file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from tests.conftest import RunningServer, start_server, stop_server

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    upstream = start_server(tmp_path_factory.mktemp("upstream"))
    home = tmp_path_factory.mktemp("relay")
    secret = home / "upstream.key"
    secret.write_text(upstream.api_key + "\n")
    config = home / "catalogue.toml"
    config.write_text(
        f'[[models]]\nid = "relay"\nengine = "remote"\nbase_url = "{upstream.base_url}/v1"\n'
        f'upstream_model = "smollm2"\napi_key_file = "{secret}"\ncontext_length = 4096\n'
    )
    try:
        gateway = start_server(home, env={"GALERNE_CONFIG": str(config)})
    except BaseException:
        stop_server(upstream)
        raise
    yield gateway
    stop_server(gateway)
    stop_server(upstream)


def streamed(reply_text: str) -> tuple[str, list[dict[str, Any]], str | None]:
    """The streamed text, tool calls and last finish_reason of an SSE body."""
    text, calls, finish = [], [], None
    for line in reply_text.splitlines():
        if not line.startswith("data: {"):
            continue
        for choice in json.loads(line[6:]).get("choices", []):
            text.append(choice["delta"].get("content") or "")
            calls += choice["delta"].get("tool_calls") or []
            finish = choice.get("finish_reason") or finish
    return "".join(text), calls, finish


@pytest.mark.parametrize("stream", [False, True])
def test_a_json_schema_reply_through_a_remote_model_validates(relay: RunningServer, stream: bool) -> None:
    body = {
        "model": "relay", "messages": [{"role": "user", "content": "Give a city and its population."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}},
        "max_tokens": 60, "stream": stream,
    }
    reply = relay.post("/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    content = streamed(reply.text)[0] if stream else reply.json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), SCHEMA)


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_through_a_remote_model_validates(relay: RunningServer, stream: bool) -> None:
    body = {"model": "relay", "messages": QUESTION, "tools": [WEATHER], "tool_choice": "any", "max_tokens": 60,
            "stream": stream}
    reply = relay.post("/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    if stream:
        _, calls, finish = streamed(reply.text)
    else:
        choice = reply.json()["choices"][0]
        calls, finish = choice["message"]["tool_calls"], choice["finish_reason"]
    assert finish == "tool_calls" and len(calls) >= 1
    for call in calls:
        assert call["function"]["name"] == "get_weather" and len(call["id"]) == 9
        jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])


def test_the_upstream_key_from_a_file_stays_out_of_the_log(relay: RunningServer) -> None:
    reply = relay.post("/v1/chat/completions", json={"model": "relay", "messages": QUESTION, "max_tokens": 4})
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1
    secret = (relay.home / "upstream.key").read_text().strip()
    assert secret.split(".")[1] not in relay.log()
