"""Read a constrained reply back: tool calls out of the calls array, and a belt-and-braces schema check.

The grammar already guarantees the shape; `jsonschema` checks it once more before the reply leaves,
and a failure is logged loudly as the bug it would be, never silently repaired.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from galerne.inference.constraints import ToolCallOutput

logger = logging.getLogger(__name__)

_ID_ALPHABET = string.ascii_letters + string.digits
TOOL_CALLS_START = "["


@dataclass(frozen=True, slots=True)
class ParsedToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI and la Plateforme send it


def new_tool_call_id() -> str:
    """9 characters from [a-zA-Z0-9], as la Plateforme requires of tool call ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))


def looks_like_tool_calls(text: str) -> bool:
    """Under the `auto` grammar a reply is a calls array exactly when it starts with `[`."""
    return text.startswith(TOOL_CALLS_START)


def parse_tool_calls(text: str, output: ToolCallOutput) -> list[ParsedToolCall] | None:
    """The calls in a complete reply, checked against each tool's schema; None when it is not calls."""
    if not looks_like_tool_calls(text):
        return None
    try:
        calls = json.loads(text)
    except json.JSONDecodeError:
        return None  # cut short by max_tokens: the caller reports it as text with finish_reason length
    parameters = {tool.name: tool.parameters for tool in output.tools}
    parsed = []
    for call in calls:
        name, arguments = call["name"], call["arguments"]
        report_violations(arguments, parameters.get(name) or {}, what=f"arguments of tool {name!r}")
        parsed.append(ParsedToolCall(new_tool_call_id(), name, json.dumps(arguments, ensure_ascii=False)))
    return parsed


def check_json_reply(text: str, schema: dict[str, Any] | None) -> None:
    """Check a complete JSON reply against its schema (any object when `schema` is None); logs failures."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        logger.error("constrained JSON reply does not parse (%s); this is a bug", exc)
        return
    report_violations(value, schema if schema is not None else {"type": "object"}, what="JSON reply")


def report_violations(value: Any, schema: dict[str, Any], *, what: str) -> list[str]:
    """Schema violations of `value` (logged at ERROR: grammar-constrained output must never violate)."""
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    problems = [error.message for error in validator.iter_errors(value)]
    if problems:
        logger.error("%s violates its schema despite the grammar (a bug): %s", what, "; ".join(problems[:3]))
    return problems
