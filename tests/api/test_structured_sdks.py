"""Guaranteed JSON and function calling through the official SDKs, unchanged, on the real model."""

from __future__ import annotations

import json
from typing import Any, Literal

import openai
import pytest
from mistralai.client import Mistral
from pydantic import BaseModel, Field

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 30}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather like in Paris today?"}]


class City(BaseModel):
    name: str = Field(max_length=40)
    country: str = Field(max_length=40)
    population: int


class Weather(BaseModel):
    city: str = Field(max_length=30)
    sky: Literal["sunny", "cloudy", "rainy"]
    temperature_c: float


def test_openai_parse_with_a_pydantic_model(openai_client: openai.OpenAI, model_id: str) -> None:
    completion = openai_client.chat.completions.parse(
        model=model_id,
        messages=[{"role": "user", "content": "Give me the name, country and population of Paris."}],
        response_format=City,
        max_tokens=200,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City)
    assert completion.choices[0].finish_reason == "stop"


def test_json_object_mode_returns_an_object(openai_client: openai.OpenAI, model_id: str) -> None:
    completion = openai_client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Describe a cat as JSON with a name and an age."}],
        response_format={"type": "json_object"},
        max_tokens=200,
    )
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)
    else:  # json_object has no schema to bound it: a long reply is cut and marked so
        assert completion.choices[0].finish_reason == "length"


def test_json_schema_streams_valid_json(openai_client: openai.OpenAI, model_id: str) -> None:
    stream = openai_client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Weather in Rome, as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": Weather.model_json_schema(), "strict": True},
        },
        max_tokens=200,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    Weather.model_validate_json(text)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_max_tokens_cut_is_reported_as_length(openai_client: openai.OpenAI, model_id: str) -> None:
    completion = openai_client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Paris as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": City.model_json_schema()}},
        max_tokens=4,
    )
    assert completion.choices[0].finish_reason == "length"


def test_a_schema_that_cannot_be_enforced_is_a_400(openai_client: openai.OpenAI, model_id: str) -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(?!x)[a-z]{3}$"}}}
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(
            model=model_id,
            messages=ASK_WEATHER,
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
        )
    assert "look-around" in str(info.value)


def test_mistral_chat_parse(mistral_client: Mistral, model_id: str) -> None:
    response = mistral_client.chat.parse(
        response_format=City,
        model=model_id,
        messages=[{"role": "user", "content": "Give me the name, country and population of Lyon."}],
        max_tokens=200,
    )
    assert response.choices is not None
    assert isinstance(response.choices[0].message.parsed, City)  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_round_trip(openai_client: openai.OpenAI, model_id: str, stream: bool) -> None:
    tools: Any = [WEATHER_TOOL, TIME_TOOL]
    first = openai_client.chat.completions.create(
        model=model_id, messages=ASK_WEATHER, tools=tools, tool_choice="required", max_tokens=100
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert calls and all(len(call.id) == 9 and call.id.isalnum() for call in calls)
    call = calls[0]
    assert call.function.name in {"get_weather", "get_time"}  # type: ignore[union-attr]
    json.loads(call.function.arguments)  # type: ignore[union-attr]
    history: Any = [
        *ASK_WEATHER,
        choice.message.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": c.id, "content": "Sunny, 24 degrees celsius."} for c in calls),
    ]
    if stream:
        chunks = list(
            openai_client.chat.completions.create(
                model=model_id, messages=history, tools=tools, tool_choice="none", max_tokens=40, stream=True
            )
        )
        answer = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
        assert chunks[-1].choices[0].finish_reason in {"stop", "length"}
    else:
        final = openai_client.chat.completions.create(
            model=model_id, messages=history, tools=tools, tool_choice="none", max_tokens=40
        )
        answer = final.choices[0].message.content or ""
    assert answer.strip()


def test_openai_streamed_tool_calls_assemble(openai_client: openai.OpenAI, model_id: str) -> None:
    chunks = list(
        openai_client.chat.completions.create(
            model=model_id,
            messages=ASK_WEATHER,
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=100,
            stream=True,
        )
    )
    deltas = [call for chunk in chunks for call in (chunk.choices[0].delta.tool_calls or [])]
    assert len(deltas) == 1
    assert deltas[0].function is not None and deltas[0].function.name == "get_weather"
    arguments = json.loads(deltas[0].function.arguments or "")
    assert set(arguments) == {"city", "unit"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None


def test_auto_choice_may_answer_in_text(openai_client: openai.OpenAI, model_id: str) -> None:
    completion = openai_client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Say hello."}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        max_tokens=30,
    )
    choice = completion.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        json.loads(choice.message.tool_calls[0].function.arguments)  # type: ignore[union-attr]
    else:
        assert choice.message.content and not choice.message.content.startswith("[")


@pytest.mark.parametrize("stream", [False, True])
def test_mistral_tool_round_trip(mistral_client: Mistral, model_id: str, stream: bool) -> None:
    tools: Any = [WEATHER_TOOL]
    response = mistral_client.chat.complete(
        model=model_id, messages=ASK_WEATHER, tools=tools, tool_choice="any", max_tokens=100  # type: ignore[arg-type]
    )
    assert response.choices is not None
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert calls and calls[0].function.name == "get_weather"
    history: Any = [
        *ASK_WEATHER,
        choice.message,
        {"role": "tool", "name": "get_weather", "tool_call_id": calls[0].id, "content": "Sunny, 24 C."},
    ]
    if stream:
        events = list(mistral_client.chat.stream(model=model_id, messages=history, tools=tools, max_tokens=40))
        final_reason = events[-1].data.choices[0].finish_reason
        assert final_reason in {"stop", "length", "tool_calls"}
    else:
        final = mistral_client.chat.complete(model=model_id, messages=history, tools=tools, max_tokens=40)
        assert final.choices is not None
        assert final.choices[0].finish_reason in {"stop", "length", "tool_calls"}


def test_a_tool_result_with_an_unknown_id_is_a_400(openai_client: openai.OpenAI, model_id: str) -> None:
    call = {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    history: Any = [
        *ASK_WEATHER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "zzzZZZ999", "content": "Sunny"},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=model_id, messages=history, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    assert "zzzZZZ999" in str(info.value)
