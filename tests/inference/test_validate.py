"""la Plateforme's semantic rules, from a wire ChatCompletionRequest to a GenerationRequest."""

from __future__ import annotations

from typing import Any

import pytest

from galerne.errors import InvalidRequestError, UnsupportedFeatureError
from galerne.inference.types import ChatMessage, Role, SamplingParams
from galerne.inference.validate import (
    DEFAULT_TEMPERATURE,
    MAX_STOP_LENGTH,
    MAX_STOP_SEQUENCES,
    SAFE_PROMPT,
    to_generation_request,
)
from galerne.protocol.chat import ChatCompletionRequest

MODEL = "smollm2-135m-instruct"
USER = {"role": "user", "content": "Hello"}
SYSTEM = {"role": "system", "content": "Be brief."}
ASSISTANT = {"role": "assistant", "content": "Hi!"}
TOOL = {"role": "tool", "content": "42", "tool_call_id": "call_1"}


def _convert(messages: list[dict[str, Any]], **fields: Any):  # type: ignore[no-untyped-def]
    request = ChatCompletionRequest.model_validate({"model": MODEL, "messages": messages, **fields})
    return to_generation_request(request, model_id=MODEL)


def _refused(messages: list[dict[str, Any]], **fields: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        _convert(messages, **fields)
    return info.value


# --- a plain request -----------------------------------------------------------------------------


def test_minimal_request_defaults() -> None:
    generation = _convert([USER])
    assert generation.messages == (ChatMessage(Role.USER, "Hello"),)
    assert generation.assistant_prefix is None
    assert generation.sampling == SamplingParams(temperature=DEFAULT_TEMPERATURE, top_p=1.0)


def test_model_default_temperature_applies_only_when_unset() -> None:
    request = ChatCompletionRequest.model_validate({"model": MODEL, "messages": [USER]})
    assert to_generation_request(request, model_id=MODEL, default_temperature=0.0).sampling.temperature == 0.0
    request = ChatCompletionRequest.model_validate({"model": MODEL, "messages": [USER], "temperature": 1.3})
    assert to_generation_request(request, model_id=MODEL, default_temperature=0.0).sampling.temperature == 1.3


def test_sampling_fields_are_carried_over() -> None:
    sampling = _convert(
        [USER],
        temperature=0.0,
        top_p=0.9,
        max_tokens=12,
        random_seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        stop=["\n\n", "END"],
    ).sampling
    assert sampling == SamplingParams(
        temperature=0.0,
        top_p=0.9,
        max_tokens=12,
        stop=("\n\n", "END"),
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
    )
    assert sampling.is_greedy


# --- first and last roles ------------------------------------------------------------------------


@pytest.mark.parametrize("first", [SYSTEM, USER, {"role": "developer", "content": "dev"}])
def test_first_role_system_or_user_is_accepted(first: dict[str, Any]) -> None:
    messages = [first] if first["role"] == "user" else [first, USER]
    assert _convert(messages).messages[-1].role is Role.USER


@pytest.mark.parametrize(("first", "role"), [(ASSISTANT, "assistant"), (TOOL, "tool")])
def test_first_role_assistant_or_tool_is_refused(first: dict[str, Any], role: str) -> None:
    error = _refused([first, USER])
    assert type(error) is InvalidRequestError
    assert error.param == "messages[0].role"
    assert error.message == f"Expected first role User or System, got {role}"


@pytest.mark.parametrize("last", [USER, TOOL])
def test_last_role_user_or_tool_is_accepted(last: dict[str, Any]) -> None:
    messages = [SYSTEM, USER, {"role": "assistant", "content": "calling"}, last]
    assert _convert(messages).messages[-1].role is Role(last["role"])


@pytest.mark.parametrize(
    ("messages", "role"),
    [([USER, ASSISTANT], "assistant"), ([SYSTEM], "system"), ([USER, SYSTEM], "system")],
)
def test_last_role_assistant_or_system_without_prefix_is_refused(messages: list[dict[str, Any]], role: str) -> None:
    error = _refused(messages)
    assert error.param == f"messages[{len(messages) - 1}].role"
    assert "Expected last role User or Tool" in error.message
    assert error.message.endswith(f"but got {role}")


# --- assistant prefix ----------------------------------------------------------------------------


def test_assistant_prefix_is_taken_off_the_conversation() -> None:
    generation = _convert([SYSTEM, USER, {"role": "assistant", "content": "Once upon", "prefix": True}])
    assert generation.assistant_prefix == "Once upon"
    assert [message.role for message in generation.messages] == [Role.SYSTEM, Role.USER]


def test_assistant_prefix_after_a_tool_message_is_accepted() -> None:
    messages = [USER, ASSISTANT, TOOL, {"role": "assistant", "content": "The answer", "prefix": True}]
    assert _convert(messages).assistant_prefix == "The answer"


def test_prefix_only_on_the_last_message() -> None:
    messages = [USER, {"role": "assistant", "content": "x", "prefix": True}, USER]
    error = _refused(messages)
    assert error.param == "messages[1].prefix"
    assert "only the last message" in error.message
    assert "prefix: true" in error.message


def test_prefix_after_an_assistant_message_is_refused() -> None:
    error = _refused([USER, ASSISTANT, {"role": "assistant", "content": "x", "prefix": True}])
    assert error.param == "messages[2]"
    assert "must follow a user or tool message" in error.message


def test_prefix_alone_is_refused() -> None:
    error = _refused([{"role": "assistant", "content": "x", "prefix": True}])
    assert error.param == "messages"
    assert "needs a user message" in error.message


def test_assistant_without_prefix_flag_is_not_a_prefix() -> None:
    error = _refused([USER, {"role": "assistant", "content": "x", "prefix": False}])
    assert error.param == "messages[1].role"


# --- role order ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "roles",
    [
        ["system", "system", "user"],
        ["system", "assistant", "user"],
        ["user", "user"],
        ["user", "system", "user"],
        ["user", "assistant", "assistant", "user"],
        ["user", "assistant", "tool", "tool", "user"],
        ["user", "assistant", "tool", "assistant", "user"],
        ["user", "assistant", "system", "user"],
    ],
)
def test_allowed_role_orders(roles: list[str]) -> None:
    messages = [{"role": role, "content": f"m{index}"} for index, role in enumerate(roles)]
    assert [message.role.value for message in _convert(messages).messages] == roles


@pytest.mark.parametrize(
    ("roles", "index", "previous", "current"),
    [
        (["system", "tool", "user"], 1, "system", "tool"),
        (["user", "tool"], 1, "user", "tool"),
        (["user", "assistant", "tool", "system", "user"], 3, "tool", "system"),
    ],
)
def test_refused_role_orders(roles: list[str], index: int, previous: str, current: str) -> None:
    messages = [{"role": role, "content": f"m{i}"} for i, role in enumerate(roles)]
    error = _refused(messages)
    assert type(error) is InvalidRequestError
    assert error.param == f"messages[{index}].role"
    assert error.message == f"Unexpected role '{current}' after role '{previous}'"


# --- duplicated parameters -----------------------------------------------------------------------


def test_max_completion_tokens_alone_is_used() -> None:
    assert _convert([USER], max_completion_tokens=30).sampling.max_tokens == 30


def test_max_tokens_and_max_completion_tokens_agreeing_is_accepted() -> None:
    assert _convert([USER], max_tokens=30, max_completion_tokens=30).sampling.max_tokens == 30


def test_max_tokens_and_max_completion_tokens_disagreeing_is_refused() -> None:
    error = _refused([USER], max_tokens=30, max_completion_tokens=40)
    assert error.param == "max_tokens"
    assert "`max_tokens` and `max_completion_tokens` disagree (30 vs 40)" in error.message


def test_seed_alone_is_used() -> None:
    assert _convert([USER], seed=5).sampling.seed == 5
    assert _convert([USER], random_seed=6).sampling.seed == 6
    assert _convert([USER], random_seed=0, seed=0).sampling.seed == 0


def test_seed_and_random_seed_disagreeing_is_refused() -> None:
    error = _refused([USER], random_seed=1, seed=2)
    assert error.param == "random_seed"
    assert "`random_seed` and `seed` disagree (1 vs 2)" in error.message


# --- stop ----------------------------------------------------------------------------------------


def test_stop_string_becomes_a_tuple() -> None:
    assert _convert([USER], stop="END").sampling.stop == ("END",)
    assert _convert([USER], stop=[]).sampling.stop == ()


def test_stop_at_the_limits_is_accepted() -> None:
    stop = [f"s{index}" for index in range(MAX_STOP_SEQUENCES - 1)] + ["x" * MAX_STOP_LENGTH]
    assert len(_convert([USER], stop=stop).sampling.stop) == MAX_STOP_SEQUENCES


def test_too_many_stop_sequences_are_refused() -> None:
    error = _refused([USER], stop=[f"s{index}" for index in range(MAX_STOP_SEQUENCES + 1)])
    assert error.param == "stop"
    assert f"at most {MAX_STOP_SEQUENCES} stop sequences" in error.message


@pytest.mark.parametrize("stop", ["", ["ok", ""], ["x" * (MAX_STOP_LENGTH + 1)]], ids=["empty", "one-empty", "long"])
def test_empty_or_long_stop_is_refused(stop: str | list[str]) -> None:
    error = _refused([USER], stop=stop)
    assert error.param == "stop"
    assert "non-empty" in error.message
    assert f"at most {MAX_STOP_LENGTH} characters" in error.message


# --- unsupported features ------------------------------------------------------------------------


def test_tools_are_refused() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    error = _refused([USER], tools=tools)
    assert isinstance(error, UnsupportedFeatureError)
    assert error.code == "unsupported_feature"
    assert error.param == "tools"
    assert "function calling" in error.message
    assert MODEL in error.message


@pytest.mark.parametrize("choice", ["none", "auto", {"type": "function", "function": {"name": "f"}}])
def test_tool_choice_alone_is_refused(choice: Any) -> None:
    error = _refused([USER], tool_choice=choice)
    assert isinstance(error, UnsupportedFeatureError)
    assert error.param == "tools"


@pytest.mark.parametrize(
    "response_format",
    [{"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "r", "schema": {}}}],
)
def test_structured_response_format_is_refused(response_format: dict[str, Any]) -> None:
    error = _refused([USER], response_format=response_format)
    assert isinstance(error, UnsupportedFeatureError)
    assert error.param == "response_format"
    assert repr(response_format["type"]) in error.message


def test_text_response_format_is_accepted() -> None:
    assert _convert([USER], response_format={"type": "text"}).messages[-1].content == "Hello"


@pytest.mark.parametrize("fields", [{"logprobs": True}, {"top_logprobs": 3}])
def test_logprobs_are_refused(fields: dict[str, Any]) -> None:
    error = _refused([USER], **fields)
    assert isinstance(error, UnsupportedFeatureError)
    assert error.param == "logprobs"
    assert "logprobs are not supported" in error.message


def test_assistant_tool_calls_are_refused() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    error = _refused([USER, {"role": "assistant", "content": None, "tool_calls": [call]}, TOOL])
    assert isinstance(error, UnsupportedFeatureError)
    assert error.param == "messages[1].tool_calls"
    assert "function calling" in error.message


@pytest.mark.parametrize(
    "image",
    [
        {"type": "image_url", "image_url": "https://example.com/a.png"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ],
)
def test_image_chunk_is_refused(image: dict[str, Any]) -> None:
    content = [{"type": "text", "text": "What is this?"}, image]
    error = _refused([SYSTEM, {"role": "user", "content": content}])
    assert isinstance(error, UnsupportedFeatureError)
    assert error.param == "messages[1].content"
    assert "accepts text only" in error.message
    assert "'image_url'" in error.message


# --- normalisation -------------------------------------------------------------------------------


def test_safe_prompt_prepends_a_system_message() -> None:
    generation = _convert([SYSTEM, USER], safe_prompt=True)
    assert generation.messages[0] == ChatMessage(Role.SYSTEM, SAFE_PROMPT)
    assert generation.messages[1:] == (ChatMessage(Role.SYSTEM, "Be brief."), ChatMessage(Role.USER, "Hello"))


def test_safe_prompt_off_adds_nothing() -> None:
    assert all(message.content != SAFE_PROMPT for message in _convert([USER]).messages)


def test_developer_role_maps_to_system() -> None:
    generation = _convert([{"role": "developer", "content": "Answer in French."}, USER])
    assert generation.messages[0] == ChatMessage(Role.SYSTEM, "Answer in French.")


def test_text_chunks_are_joined() -> None:
    content = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}, {"type": "text", "text": "!"}]
    generation = _convert([{"role": "user", "content": content}])
    assert generation.messages == (ChatMessage(Role.USER, "Hello, world!"),)


def test_null_content_becomes_empty_text_and_name_is_kept() -> None:
    generation = _convert([{"role": "user", "content": None, "name": "ann"}])
    assert generation.messages == (ChatMessage(Role.USER, "", name="ann"),)
