"""la Plateforme's semantic rules, from a wire ChatCompletionRequest to a GenerationRequest."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from galerne.errors import InvalidRequestError, UnsupportedFeatureError
from galerne.inference.constraints import JsonOutput, ToolCallOutput, ToolChoice
from galerne.inference.schema_limits import MAX_SCHEMA_NESTING as MAX_SCHEMA_DEPTH
from galerne.inference.types import ChatMessage, LogprobOptions, Role, SamplingParams, ToolCall
from galerne.inference.validate import (
    DEFAULT_TEMPERATURE,
    MAX_STOP_LENGTH,
    MAX_STOP_SEQUENCES,
    SAFE_PROMPT,
    to_generation_request,
)
from galerne.protocol.base import INVALID_UNICODE, find_invalid_unicode
from galerne.protocol.chat import ChatCompletionRequest

MODEL = "smollm2-135m-instruct"
USER = {"role": "user", "content": "Hello"}
SYSTEM = {"role": "system", "content": "Be brief."}
ASSISTANT = {"role": "assistant", "content": "Hi!"}
TOOL = {"role": "tool", "content": "42", "tool_call_id": "call_1"}
CALLING = {
    "role": "assistant",
    "content": "calling",
    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
}


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
    messages = [SYSTEM, USER, CALLING if last is TOOL else ASSISTANT, last]
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
    messages = [USER, CALLING, TOOL, {"role": "assistant", "content": "The answer", "prefix": True}]
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


def _conversation(roles: list[str]) -> list[dict[str, Any]]:
    """Messages with these roles; an assistant followed by tool messages calls one tool per result."""
    messages: list[dict[str, Any]] = []
    caller, answered = 0, 0
    for index, role in enumerate(roles):
        message: dict[str, Any] = {"role": role, "content": f"m{index}"}
        if role == "assistant":
            following = roles[index + 1 :]
            results = _leading_tools(following)
            if results:
                function = {"name": "f", "arguments": "{}"}
                message["tool_calls"] = [
                    {"id": f"c{index}n{n}", "type": "function", "function": function} for n in range(results)
                ]
            caller, answered = index, 0
        if role == "tool":
            message["tool_call_id"] = f"c{caller}n{answered}"
            answered += 1
        messages.append(message)
    return messages


def _leading_tools(roles: list[str]) -> int:
    count = 0
    while count < len(roles) and roles[count] == "tool":
        count += 1
    return count


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
    messages = _conversation(roles)
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
    error = _refused(_conversation(roles))
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


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}


def test_tools_default_to_auto_choice() -> None:
    constraint = _convert([USER], tools=[WEATHER]).constraint
    assert isinstance(constraint, ToolCallOutput)
    assert constraint.choice is ToolChoice.AUTO
    assert [tool.name for tool in constraint.tools] == ["get_weather"]
    assert constraint.allows_parallel_calls is True


@pytest.mark.parametrize(("choice", "expected"), [("any", ToolChoice.REQUIRED), ("required", ToolChoice.REQUIRED)])
def test_any_and_required_force_a_call(choice: str, expected: ToolChoice) -> None:
    constraint = _convert([USER], tools=[WEATHER], tool_choice=choice, parallel_tool_calls=False).constraint
    assert isinstance(constraint, ToolCallOutput)
    assert constraint.choice is expected
    assert constraint.allows_parallel_calls is False


def test_named_choice_names_the_tool() -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    constraint = _convert([USER], tools=[WEATHER], tool_choice=choice).constraint
    assert isinstance(constraint, ToolCallOutput)
    assert (constraint.choice, constraint.named) == (ToolChoice.NAMED, "get_weather")


def test_none_choice_means_free_text() -> None:
    assert _convert([USER], tools=[WEATHER], tool_choice="none").constraint is None


def test_named_choice_must_be_a_given_tool() -> None:
    error = _refused([USER], tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})
    assert error.param == "tool_choice"
    assert "'nope'" in error.message and "get_weather" in error.message


@pytest.mark.parametrize("choice", ["none", "auto", {"type": "function", "function": {"name": "f"}}])
def test_tool_choice_alone_is_refused(choice: Any) -> None:
    error = _refused([USER], tool_choice=choice)
    assert error.param == "tool_choice"


def test_duplicate_tool_names_are_refused() -> None:
    assert "unique" in _refused([USER], tools=[WEATHER, WEATHER]).message


def test_invalid_parameters_schema_is_refused() -> None:
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}
    error = _refused([USER], tools=[broken])
    assert error.param == "tools[0].function.parameters"
    assert "invalid JSON schema" in error.message


def test_tools_and_json_response_format_together_are_refused() -> None:
    error = _refused([USER], tools=[WEATHER], response_format={"type": "json_object"})
    assert error.param == "response_format"


def test_json_object_and_json_schema_become_json_constraints() -> None:
    assert _convert([USER], response_format={"type": "json_object"}).constraint == JsonOutput(schema=None)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}
    assert _convert([USER], response_format=fmt).constraint == JsonOutput(schema=schema, name="thing", strict=True)


def test_json_schema_needs_a_schema() -> None:
    error = _refused([USER], response_format={"type": "json_schema"})
    assert error.param == "response_format.json_schema"


def test_invalid_json_schema_is_refused() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": 12}}}
    assert _refused([USER], response_format=fmt).param == "response_format.json_schema.schema"


def test_a_tool_round_trip_is_accepted() -> None:
    result = {"role": "tool", "content": "22 C", "tool_call_id": "abcDEF123", "name": "get_weather"}
    generation = _convert([USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}, result], tools=[WEATHER])
    assistant = generation.messages[1]
    assert assistant.tool_calls == (ToolCall("abcDEF123", "get_weather", '{"city":"Paris"}'),)
    assert generation.messages[2].tool_call_id == "abcDEF123"


def test_object_arguments_are_serialised() -> None:
    call = {**CALL, "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    result = {"role": "tool", "content": "22 C", "tool_call_id": "abcDEF123"}
    generation = _convert([USER, {"role": "assistant", "tool_calls": [call]}, result])
    assert generation.messages[1].tool_calls[0].arguments == '{"city": "Paris"}'


@pytest.mark.parametrize(
    ("messages", "mentions"),
    [
        ([USER, {"role": "assistant", "tool_calls": [CALL]}, {**TOOL, "tool_call_id": "zzz"}], "does not match"),
        ([USER, {"role": "assistant", "tool_calls": [CALL]}, USER], "have no tool message"),
        ([USER, {"role": "assistant", "tool_calls": [CALL, CALL]}, {**TOOL, "tool_call_id": "abcDEF123"}], "repeat"),
        ([USER, ASSISTANT, TOOL], "does not match"),
        ([USER, {"role": "assistant", "tool_calls": [{**CALL, "id": "null"}]}, TOOL], "needs the `id`"),
        ([USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "content": "x"}], "tool_call_id"),
    ],
)
def test_mismatched_tool_calls_and_results_are_400(messages: list[Any], mentions: str) -> None:
    assert mentions in _refused(messages).message


def test_text_response_format_is_accepted() -> None:
    assert _convert([USER], response_format={"type": "text"}).messages[-1].content == "Hello"


def test_logprobs_and_top_logprobs_become_options() -> None:
    assert _convert([USER]).logprobs is None
    assert _convert([USER], logprobs=True).logprobs == LogprobOptions(num_top=0)
    assert _convert([USER], logprobs=True, top_logprobs=20).logprobs == LogprobOptions(num_top=20)


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"top_logprobs": 3}, "needs `logprobs: true`"),
        ({"logprobs": True, "top_logprobs": 21}, "between 0 and 20"),
        ({"logprobs": True, "response_format": {"type": "json_object"}}, "cannot be combined"),
    ],
)
def test_bad_logprobs_are_400(fields: dict[str, Any], mentions: str) -> None:
    error = _refused([USER], **fields)
    assert error.status == 400
    assert error.param in {"logprobs", "top_logprobs"}
    assert mentions in error.message


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


# --- the wire schema: strict types, bounds, valid Unicode ---------------------------------------------


def _schema_errors(**fields: Any) -> list[Any]:
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({"model": MODEL, "messages": [USER], **fields})
    return list(info.value.errors())


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", "10"), ("stream", "yes"), ("stream", 1), ("n", "2"), ("n", 2.0), ("top_p", "1"),
     ("safe_prompt", "true"), ("temperature", float("inf")), ("presence_penalty", float("nan"))],
)
def test_wire_schema_does_not_coerce_types(field: str, value: Any) -> None:
    assert _schema_errors(**{field: value})[0]["loc"] == (field,)


def test_nested_fields_are_strict_too() -> None:
    errors = _schema_errors(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}])
    assert any(error["loc"][-1] == "text" and error["type"] == "string_type" for error in errors)


@pytest.mark.parametrize(
    ("field", "bound"),
    [("random_seed", 2**64 - 1), ("seed", 2**64 - 1), ("max_tokens", 2**31 - 1), ("max_completion_tokens", 2**31 - 1)],
)
def test_numbers_are_bounded_by_what_engines_hold(field: str, bound: int) -> None:
    assert ChatCompletionRequest.model_validate({"model": MODEL, "messages": [USER], field: bound})
    error = _schema_errors(**{field: bound + 1})[0]
    assert error["type"] == "less_than_equal" and str(bound) in error["msg"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": [{"role": "user", "content": "a\ud800b"}]}, "messages[0].content"),
        ({"messages": [USER, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "\udfff"}]},
         "messages[2].content"),
        ({"messages": [{"role": "user", "content": "hi", "name": "x\udc00"}]}, "messages[0].name"),
        ({"stop": "\ud800"}, "stop"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"\ud800": 1}}}]},
         "tools[0].function.parameters"),
        ({"metadata": {"k": "\ud800"}}, "metadata.k"),
    ],
)
def test_lone_surrogates_are_refused_naming_the_field(fields: dict[str, Any], param: str) -> None:
    error = _schema_errors(**fields)[0]
    assert error["type"] == INVALID_UNICODE
    assert error["ctx"]["param"] == param
    assert error["msg"].startswith(param) and "not valid Unicode" in error["msg"]


def test_the_first_invalid_string_in_document_order_is_named() -> None:
    body = {"a": ["ok", "\ud800"], "b": "\ud801"}
    problem = find_invalid_unicode(body)
    assert problem is not None and problem.param == "a[1]" and "\\ud800" in problem.message


def test_valid_text_and_astral_characters_pass() -> None:
    assert find_invalid_unicode({"messages": [{"content": "héllo \U0001f600", "n": 1, "x": None}]}) is None


def test_deep_nesting_does_not_overflow_the_stack() -> None:
    nested: Any = "\ud800"
    for _ in range(100_000):
        nested = [nested]
    problem = find_invalid_unicode(nested)
    assert problem is not None and problem.param.endswith("[0][0]")


def _nested_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize("where", ["tools", "response_format"])
def test_a_schema_nested_too_deep_is_400_not_a_recursion_error(where: str) -> None:
    deep = _nested_schema(150)  # 301 JSON levels: jsonschema's own check would exhaust Python's recursion
    if where == "tools":
        fields: dict[str, Any] = {"tools": [{"type": "function", "function": {"name": "f", "parameters": deep}}]}
    else:
        fields = {"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": deep}}}
    error = _refused([USER], **fields)
    assert str(MAX_SCHEMA_DEPTH) in error.message and "deep" in error.message


def test_a_schema_at_the_depth_limit_is_accepted() -> None:
    schema = _nested_schema(MAX_SCHEMA_DEPTH // 2 - 1)  # two JSON levels per object level, plus the root
    generation = _convert([USER], response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    assert isinstance(generation.constraint, JsonOutput)
