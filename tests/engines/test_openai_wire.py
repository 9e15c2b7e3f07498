"""The upstream wire: constraints and seeds in each dialect's field names, and streamed tool calls reassembled."""

from __future__ import annotations

import pytest

from galerne.engines.openai_wire import Chunk, ToolCallAssembler, request_body
from galerne.inference.constraints import JsonOutput, ToolCallOutput, ToolChoice, ToolSpec
from galerne.inference.types import ChatMessage, GenerationRequest, Role, SamplingParams, ToolCall

TOOL = ToolSpec(name="get_weather", description="Weather", parameters={"type": "object"})


def body(dialect: str = "openai", **fields: object) -> dict[str, object]:
    messages = (ChatMessage(Role.USER, "Hi"),)
    request = GenerationRequest(messages=messages, sampling=SamplingParams(seed=3), **fields)  # type: ignore[arg-type]
    return request_body(request, upstream_model="up", dialect=dialect)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dialect", "seed_field", "required"), [("openai", "seed", "required"), ("mistral", "random_seed", "any")]
)
def test_each_dialect_names_seeds_and_forced_tool_calls_its_way(dialect: str, seed_field: str, required: str) -> None:
    sent = body(dialect, constraint=ToolCallOutput((TOOL,), ToolChoice.REQUIRED, allows_parallel_calls=False))
    assert sent[seed_field] == 3 and sent["tool_choice"] == required and sent["parallel_tool_calls"] is False
    assert sent["tools"] == [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"},
                                                               "description": "Weather"}}]
    assert ("stream_options" in sent) is (dialect == "openai")


def test_json_constraints_become_response_format() -> None:
    assert body(constraint=JsonOutput())["response_format"] == {"type": "json_object"}
    schema = {"type": "object"}
    sent = body(constraint=JsonOutput(schema=schema, name="s", strict=True))
    expected = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}}
    assert sent["response_format"] == expected
    named = body(constraint=ToolCallOutput((TOOL,), ToolChoice.NAMED, named="get_weather"))
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert "parallel_tool_calls" not in named


def test_streamed_tool_call_fragments_are_joined_by_index() -> None:
    calls = ToolCallAssembler()
    for delta in [
        {"index": 0, "id": "abcdefghi", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city": '}},
        {"index": 1, "id": "zyxwvutsr", "function": {"name": "get_weather"}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
    ]:
        [choice] = Chunk.model_validate({"choices": [{"delta": {"tool_calls": [delta]}}]}).choices
        assert choice.delta is not None and choice.delta.tool_calls is not None
        calls.add(choice.delta.tool_calls)
    assert calls.calls() == (
        ToolCall("abcdefghi", "get_weather", '{"city": "Paris"}'), ToolCall("zyxwvutsr", "get_weather", "{}")
    )
