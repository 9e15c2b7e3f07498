"""Grammar construction: schemas for tool calls, safe integer bounds, compile errors, cache, parsing."""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import llguidance
import llguidance.llamacpp
import pytest
from jsonschema import Draft202012Validator

from galerne.engines.llamacpp.model import LlamaModel
from galerne.errors import InvalidRequestError
from galerne.inference.constraints import JsonOutput, ToolCallOutput, ToolChoice, ToolSpec
from galerne.structured.grammars import GrammarCache
from galerne.structured.outputs import OutputReader, OutputViolation
from galerne.structured.schemas import (
    MAX_NUMBER,
    MAX_SAFE_INTEGER,
    NUMBER_RESOLUTION,
    for_grammar,
    tool_calls_schema,
)
from galerne.structured.tool_format import new_tool_call_id

WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city",
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]},
)
ADD = ToolSpec(
    "add",
    "Add two integers",
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
)


@pytest.fixture(scope="module")
def tokenizer(model: LlamaModel) -> llguidance.LLTokenizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return llguidance.llamacpp.lltokenizer_from_vocab(model.vocab)


def accepts(cache: GrammarCache, model: LlamaModel, constraint: Any, text: str) -> bool:
    matcher = cache.matcher(constraint)
    tokens = model.tokenize(text, parse_special=False)
    return matcher.try_consume_tokens(tokens) == len(tokens) and matcher.is_accepting()


def test_numbers_get_bounds_only_where_the_schema_has_none() -> None:
    schema = {
        "type": "object",
        "properties": {
            "free": {"type": "integer"},
            "capped": {"type": "integer", "maximum": 10},
            "nullable": {"type": ["integer", "null"]},
            "type": {"type": "string"},
            "ratio": {"type": "number", "exclusiveMinimum": 0},
            "step": {"type": "number", "multipleOf": 0.5},
        },
    }
    bounded = for_grammar(schema)
    ratio = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_NUMBER, "multipleOf": NUMBER_RESOLUTION}
    assert bounded["properties"]["ratio"] == ratio
    assert bounded["properties"]["step"]["multipleOf"] == 0.5
    safe = {"type": "integer", "maximum": MAX_SAFE_INTEGER, "minimum": -MAX_SAFE_INTEGER}
    assert bounded["properties"]["free"] == safe
    assert bounded["properties"]["capped"] == {"type": "integer", "maximum": 10, "minimum": -MAX_SAFE_INTEGER}
    assert bounded["properties"]["nullable"]["maximum"] == MAX_SAFE_INTEGER
    assert bounded["properties"]["type"] == {"type": "string"}
    assert schema["properties"]["free"] == {"type": "integer"}  # the caller's schema is untouched


def test_tool_calls_schema_ties_arguments_to_the_name() -> None:
    schema = tool_calls_schema(ToolCallOutput((WEATHER, ADD), ToolChoice.REQUIRED))
    assert schema["minItems"] == 1
    branches = schema["items"]["anyOf"]
    assert [branch["properties"]["name"] for branch in branches] == [{"const": "get_weather"}, {"const": "add"}]
    assert list(branches[0]["properties"]) == ["name", "arguments"]


def test_named_and_single_call_choices_allow_exactly_one_call() -> None:
    named = tool_calls_schema(ToolCallOutput((WEATHER, ADD), ToolChoice.NAMED, named="add"))
    assert named["maxItems"] == 1
    assert named["items"]["properties"]["name"] == {"const": "add"}
    single = tool_calls_schema(ToolCallOutput((WEATHER, ADD), ToolChoice.AUTO, allows_parallel_calls=False))
    assert single["maxItems"] == 1


def test_tool_defs_are_hoisted_and_conflicts_refused() -> None:
    with_defs = ToolSpec(
        "locate",
        "",
        {"type": "object", "properties": {"p": {"$ref": "#/$defs/point"}}, "$defs": {"point": {"type": "string"}}},
    )
    schema = tool_calls_schema(ToolCallOutput((with_defs,), ToolChoice.REQUIRED))
    assert schema["$defs"] == {"point": {"type": "string"}}
    assert "$defs" not in schema["items"]["properties"]["arguments"]
    clash = ToolSpec("other", "", {"type": "object", "$defs": {"point": {"type": "integer"}}})
    with pytest.raises(InvalidRequestError, match="point"):
        tool_calls_schema(ToolCallOutput((with_defs, clash), ToolChoice.REQUIRED))


def test_json_grammar_is_compact_and_enforces_the_schema(
    model: LlamaModel, tokenizer: llguidance.LLTokenizer
) -> None:
    cache = GrammarCache(tokenizer)
    constraint = JsonOutput({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    assert accepts(cache, model, constraint, '{"n":42}')
    assert not accepts(cache, model, constraint, '{ "n": 42 }')
    assert not accepts(cache, model, constraint, '{"n":"42"}')
    assert not accepts(cache, model, constraint, '{"n":' + "9" * 17 + "}")  # beyond JSON's safe integers
    number = JsonOutput({"type": "number"})
    assert accepts(cache, model, number, "1.123456789")
    assert not accepts(cache, model, number, "1.1234567891")  # a tenth decimal: the loop guard


def test_auto_choice_allows_text_or_calls(model: LlamaModel, tokenizer: llguidance.LLTokenizer) -> None:
    cache = GrammarCache(tokenizer)
    auto = ToolCallOutput((WEATHER,), ToolChoice.AUTO)
    assert accepts(cache, model, auto, "It is sunny.")
    assert accepts(cache, model, auto, '[{"name":"get_weather","arguments":{"city":"Paris"}}]')
    assert not accepts(cache, model, auto, '[{"name":"get_time","arguments":{}}]')
    assert not accepts(cache, model, auto, '[{"name":"get_weather","arguments":{"town":"Paris"}}]')
    required = ToolCallOutput((WEATHER,), ToolChoice.REQUIRED)
    assert not accepts(cache, model, required, "It is sunny.")


def test_a_schema_that_cannot_compile_is_a_400_naming_why(tokenizer: llguidance.LLTokenizer) -> None:
    cache = GrammarCache(tokenizer)
    lookahead = JsonOutput({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=x)a"}}})
    with pytest.raises(InvalidRequestError) as info:
        cache.grammar_for(lookahead)
    assert "look-around" in info.value.message
    assert info.value.param == "response_format"
    assert info.value.status == 400


def test_grammars_are_cached_and_bounded(tokenizer: llguidance.LLTokenizer) -> None:
    cache = GrammarCache(tokenizer, max_entries=2)
    first = JsonOutput({"type": "object", "properties": {"a": {"type": "integer"}}})
    assert cache.grammar_for(first) is cache.grammar_for(JsonOutput(dict(first.schema or {})))
    for name in ("b", "c"):
        cache.grammar_for(JsonOutput({"type": "object", "properties": {name: {"type": "integer"}}}))
    assert len(cache._entries) == 2


def test_tool_call_ids_are_nine_alphanumerics() -> None:
    ids = {new_tool_call_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9]{9}", value) for value in ids)


def test_the_reader_returns_typed_calls_with_arguments_as_json_text() -> None:
    reader = OutputReader(ToolCallOutput((WEATHER, ADD), ToolChoice.AUTO))
    assert reader.push('[{"name":"add",') is True
    reader.push('"arguments":{"a":1,"b":2}}]')
    calls = reader.finish()
    assert [(call.name, json.loads(call.arguments)) for call in calls] == [("add", {"a": 1, "b": 2})]
    text = OutputReader(ToolCallOutput((WEATHER, ADD), ToolChoice.AUTO))
    assert text.push("Plain text") is False and text.finish() == ()


def test_a_reply_violating_its_schema_is_refused_never_passed_on() -> None:
    reader = OutputReader(JsonOutput({"type": "object", "properties": {"n": {"type": "integer"}}}))
    reader.push('{"n":"x"}')
    with pytest.raises(OutputViolation, match=r"at \$\.n: 'x' is not of type 'integer'"):
        reader.finish()
    cut = OutputReader(ToolCallOutput((ADD,), ToolChoice.REQUIRED))
    assert cut.push('[{"name":"add","argu') is True
    with pytest.raises(OutputViolation, match="not complete JSON"):
        cut.finish()


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("2024-02-29T10:00:00Z", True),
        ("1999-12-31T23:59:59.123-08:00", True),
        ("2023-02-29T10:00:00Z", False),  # not a leap year
        ("0000-01-01T00:00:00Z", False),  # no year 0 in Python or jsonschema
        ("2023-01-01T10:00:60Z", False),  # a leap second parsers refuse
        ("2023-01-01T10:00:00.1234567890Z", False),  # endless fractions are a loop risk
    ],
)
def test_date_times_are_held_to_what_parsers_read_back(
    model: LlamaModel, tokenizer: llguidance.LLTokenizer, value: str, allowed: bool
) -> None:
    schema = {"type": "string", "format": "date-time"}
    assert accepts(GrammarCache(tokenizer), model, JsonOutput(schema), json.dumps(value)) is allowed
    if allowed:
        assert Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).is_valid(value)


def test_only_schema_keywords_are_walked() -> None:
    schema = {
        "type": "object",
        "properties": {"format": {"type": "string"}, "type": {"type": "integer"}},
        "default": {"type": "integer"},
        "enum": [{"type": "number"}],
        "anyOf": [{"type": "integer"}],
        "$defs": {"when": {"type": "string", "format": "date"}},
    }
    tightened = for_grammar(schema)
    assert tightened["properties"]["format"] == {"type": "string"}  # a property called "format" is not a format
    assert tightened["properties"]["type"]["maximum"] == MAX_SAFE_INTEGER
    assert tightened["default"] == {"type": "integer"} and tightened["enum"] == [{"type": "number"}]
    assert tightened["anyOf"][0]["maximum"] == MAX_SAFE_INTEGER
    assert "format" not in tightened["$defs"]["when"] and tightened["$defs"]["when"]["pattern"].startswith("^")


def test_strict_mode_closes_objects_that_do_not_say_otherwise(
    model: LlamaModel, tokenizer: llguidance.LLTokenizer
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    cache = GrammarCache(tokenizer)
    assert accepts(cache, model, JsonOutput(schema), '{"a":1,"b":2}')
    assert not accepts(cache, model, JsonOutput(schema, strict=True), '{"a":1,"b":2}')
    assert accepts(cache, model, JsonOutput(schema, strict=True), '{"a":1}')
    open_map = {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 2}
    assert for_grammar(open_map, closes_objects=True)["additionalProperties"]["type"] == "integer"


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"$ref": "#/$defs/missing"}, "a `$ref` points to `#/$defs/missing`, which the schema does not define"),
        ({"type": "array", "uniqueItems": True}, "`uniqueItems` cannot be enforced while decoding"),
        ({"type": "string", "format": "uri-reference"}, "format uri-reference cannot be enforced"),
        ({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]}, "use `anyOf` instead"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "no JSON value satisfies the schema: minimum (5)"),
        ({"type": "string", "pattern": "(a)\\1"}, "not supported: backreferences are not supported"),
    ],
)
def test_every_refusal_says_what_to_change_in_plain_words(
    tokenizer: llguidance.LLTokenizer, schema: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        GrammarCache(tokenizer).grammar_for(JsonOutput(schema))
    assert expected in info.value.message
    assert "coerce_one_of" not in info.value.message and "<state>" not in info.value.message
