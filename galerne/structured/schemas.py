"""JSON schemas for what a constrained reply may be.

Tool calls are one JSON array, `[{"name": ..., "arguments": {...}}]`, whose items are a union over the
tools: `name` comes first so that, once the model picks a name, the arguments are held to that tool's
own schema. Each tool's `$defs` are hoisted to the root so that its local `$ref`s still resolve.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from jsonschema import Draft202012Validator

from galerne.errors import InvalidRequestError
from galerne.inference.constraints import JsonOutput, ToolCallOutput, ToolChoice, ToolSpec
from galerne.structured.patterns import check_pattern_size

ANY_OBJECT: dict[str, Any] = {"type": "object"}
_CHECKED_FORMATS = frozenset(Draft202012Validator.FORMAT_CHECKER.checkers)
_DEFINITION_KEYS = ("$defs", "definitions")
# An unbounded number lets a small model write digits forever (vLLM#52011: `1.1588888…` until
# max_tokens). Grammars therefore bound what a schema leaves open: integers to JSON's interoperable
# range (RFC 8259 §6), other numbers to ±1e15 written with at most 9 decimals and no exponent. Every
# value allowed is still valid against the caller's schema; replies are checked against that schema.
MAX_SAFE_INTEGER = 2**53 - 1
MAX_NUMBER = 1e15
NUMBER_RESOLUTION = 1e-9

# llguidance's date and time formats accept year 0000, February 29 of any year, second 60 and endless
# fractions; Python, jsonschema and most parsers refuse those. These patterns allow exactly the RFC 3339
# values such parsers read back (years 0001-9999, real calendar days, at most 9 decimals of a second).
_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
# Formats llguidance enforces. Others are annotations (JSON Schema 2020-12): those `jsonschema` does not
# check either are dropped from the grammar, the rest are refused with a 400 naming them.
ENFORCED_FORMATS = ("date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid", "uri")
FORMAT_PATTERNS = {"date": f"^{_DATE}$", "time": f"^{_TIME}$", "date-time": f"^{_DATE}T{_TIME}$"}


def json_output_schema(output: JsonOutput) -> dict[str, Any]:
    if output.schema is None:
        return ANY_OBJECT
    tightened: dict[str, Any] = for_grammar(output.schema, closes_objects=output.strict)
    return tightened


# Keywords whose value is a schema, a list of schemas, or a map of names to schemas. Only these are
# walked: `const`, `enum`, `default` or a property that happens to be called "format" are data.
_SCHEMA_KEYWORDS = frozenset(
    {"items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
     "unevaluatedItems", "unevaluatedProperties", "additionalItems"}
)  # fmt: skip
_SCHEMA_LIST_KEYWORDS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_MAP_KEYWORDS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def for_grammar(schema: Any, *, closes_objects: bool = False, root: Any = None) -> Any:
    """A copy of `schema` that the grammar enforces: numbers bounded and dates made strict, as above;
    `oneOf` whose branches cannot overlap enforced as `anyOf` (the same values, see `exclusive_branches`);
    with `closes_objects` (strict mode), objects that do not mention `additionalProperties` admit no
    others, unless closing them would leave no valid value. Patterns too large to enforce are a 400.

    Every value it allows is valid against `schema` itself, which is what replies are checked against.
    """
    if not isinstance(schema, dict):
        return schema  # true, false, or a draft-4 tuple `items` list handled by the caller
    root = schema if root is None else root

    def walk(item: Any) -> Any:
        return for_grammar(item, closes_objects=closes_objects, root=root)

    tightened = dict(schema)
    for key, value in schema.items():
        if key in _SCHEMA_KEYWORDS:
            tightened[key] = [walk(item) for item in value] if isinstance(value, list) else walk(value)
        elif key in _SCHEMA_LIST_KEYWORDS and isinstance(value, list):
            tightened[key] = [walk(item) for item in value]
        elif key in _SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
            tightened[key] = {name: walk(item) for name, item in value.items()}
    _check_patterns(schema)
    if isinstance(schema.get("oneOf"), list) and exclusive_branches(schema["oneOf"], root):
        branches = tightened.pop("oneOf")
        if "anyOf" in tightened:
            tightened["allOf"] = [*tightened.get("allOf", []), {"anyOf": branches}]
        else:
            tightened["anyOf"] = branches
    if closes_objects and _may_close(schema):
        tightened["additionalProperties"] = False
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
    if "number" in kinds:
        _bound(schema, tightened, MAX_NUMBER)
        tightened.setdefault("multipleOf", NUMBER_RESOLUTION)
    elif "integer" in kinds:
        _bound(schema, tightened, MAX_SAFE_INTEGER)
    fmt = schema.get("format")
    if fmt in FORMAT_PATTERNS and "pattern" not in schema:
        tightened["pattern"] = FORMAT_PATTERNS[tightened.pop("format")]
    elif isinstance(fmt, str) and fmt not in ENFORCED_FORMATS and fmt not in _CHECKED_FORMATS:
        del tightened["format"]  # an annotation nobody checks: enforcing it would refuse a valid schema
    return tightened


def _may_close(schema: dict[str, Any]) -> bool:
    """Strict mode closes an object only where that leaves valid values: not when `required` or
    `minProperties` asks for keys it does not declare, nor when combinators may declare them."""
    is_object = schema.get("type") == "object" or "properties" in schema
    if not is_object or "additionalProperties" in schema or "patternProperties" in schema:
        return False
    if any(key in schema for key in ("allOf", "anyOf", "oneOf", "$ref", "if", "dependentSchemas")):
        return False
    properties, required = schema.get("properties"), schema.get("required")
    declared: dict[str, Any] = properties if isinstance(properties, dict) else {}
    min_properties = schema.get("minProperties", 0)
    return all(name in declared for name in (required if isinstance(required, list) else [])) and (
        not isinstance(min_properties, int) or min_properties <= len(declared)
    )


def exclusive_branches(branches: list[Any], root: Any) -> bool:
    """Whether no value can match two of `branches` (so `oneOf` means the same as `anyOf`).

    Provable cases only: branches whose `type`s are disjoint (integer counts as a number), branches that
    are distinct `const`/`enum` values, or object branches that all require one property with a
    distinct `const`/`enum` in each (a discriminator). Local `$ref`s are followed one step.
    """
    resolved = [_resolve_local(branch, root) for branch in branches]
    if not all(isinstance(branch, dict) for branch in resolved):
        return False
    return (
        _pairwise_disjoint([_types_of(branch) for branch in resolved])
        or _pairwise_disjoint([_values_of(branch) for branch in resolved])
        or any(
            _pairwise_disjoint([_values_of(_discriminator(branch, name)) for branch in resolved])
            for name in _required_names(resolved[0])
        )
    )


def _types_of(branch: dict[str, Any]) -> set[str] | None:
    kinds = branch.get("type")
    found = {kinds} if isinstance(kinds, str) else set(kinds) if isinstance(kinds, list) else None
    if found is not None and "integer" in found:
        found.add("number")
    if found is not None and "number" in found:
        found.add("integer")
    return found


def _values_of(branch: Any) -> set[str] | None:
    if not isinstance(branch, dict):
        return None
    if "const" in branch:
        return {json.dumps(branch["const"], sort_keys=True)}
    if isinstance(branch.get("enum"), list):
        return {json.dumps(value, sort_keys=True) for value in branch["enum"]}
    return None


def _discriminator(branch: dict[str, Any], name: str) -> Any:
    properties = branch.get("properties")
    if name not in _required_names(branch) or not isinstance(properties, dict):
        return None
    return properties.get(name)


def _required_names(branch: dict[str, Any]) -> list[str]:
    required = branch.get("required")
    return [name for name in required if isinstance(name, str)] if isinstance(required, list) else []


def _pairwise_disjoint(sets: list[set[str] | None]) -> bool:
    if len(sets) < 2 or any(found is None for found in sets):
        return False
    seen: set[str] = set()
    for found in sets:
        assert found is not None
        if seen & found:
            return False
        seen |= found
    return True


def _resolve_local(branch: Any, root: Any) -> Any:
    ref = branch.get("$ref") if isinstance(branch, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return branch
    node = root
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or key not in node:
            return branch
        node = node[key]
    return node


def _check_patterns(schema: dict[str, Any]) -> None:
    if isinstance(schema.get("pattern"), str):
        check_pattern_size(schema["pattern"])
    if isinstance(schema.get("patternProperties"), dict):
        for pattern in schema["patternProperties"]:
            check_pattern_size(pattern)


def _bound(schema: dict[str, Any], bounded: dict[str, Any], limit: float) -> None:
    if "maximum" not in schema and "exclusiveMaximum" not in schema:
        bounded["maximum"] = limit
    if "minimum" not in schema and "exclusiveMinimum" not in schema:
        bounded["minimum"] = -limit


def tool_calls_schema(output: ToolCallOutput) -> dict[str, Any]:
    """The schema of the calls array allowed by `output` (named choice: that tool only, once)."""
    tools = output.tools
    if output.choice is ToolChoice.NAMED:
        tools = tuple(tool for tool in tools if tool.name == output.named)
    definitions: dict[str, dict[str, Any]] = {key: {} for key in _DEFINITION_KEYS}
    items = [_call_schema(tool, definitions) for tool in tools]
    single_call = output.choice is ToolChoice.NAMED or not output.allows_parallel_calls
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "maxItems": 1 if single_call else max(len(output.tools), 1) * 2,
        "items": items[0] if len(items) == 1 else {"anyOf": items},
    }
    for key, found in definitions.items():
        if found:
            schema[key] = found
    return schema


def _call_schema(tool: ToolSpec, definitions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    parameters = for_grammar(copy.deepcopy(tool.parameters), closes_objects=tool.strict) or {
        "type": "object",
        "properties": {},
    }
    for key in _DEFINITION_KEYS:
        for name, body in parameters.pop(key, {}).items():
            known = definitions[key].setdefault(name, body)
            if known != body:
                raise InvalidRequestError(
                    f"tools {tool.name!r} and another tool define different schemas under {key}/{name}; "
                    "rename one of them",
                    param="tools",
                )
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
