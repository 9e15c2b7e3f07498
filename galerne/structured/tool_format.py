"""The generic tool-call format, for models whose chat template has none: a JSON array of calls.

    [{"name": "get_weather", "arguments": {"city": "Paris"}}]

This module is the format's only owner: the instructions that describe it to the model, how earlier
calls are written back into the history, the grammar that holds a reply to it, how a reply is
recognised as calls, and how calls are read back. Engines use it through `structured`; services only
ever see typed `ToolCall`s (a per-family native format would be a sibling module with the same job).
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Sequence
from typing import Any

import llguidance

from galerne.inference.constraints import ToolCallOutput, ToolChoice
from galerne.inference.types import ToolCall
from galerne.structured.checks import OutputViolation, load_checked, violations

_CALLS_START = "["
# `auto`: text that does not start with the calls marker, or a calls array. The first character decides.
_TEXT_OR_CALLS = "start: TEXT | calls\nTEXT: /[^\\[](.|\\n)*/\ncalls: %json {schema}\n"
_ID_ALPHABET = string.ascii_letters + string.digits


def describe(output: ToolCallOutput) -> str:
    """Instructions for the system turn: the tools, the exact reply format, and what `choice` demands."""
    described = "\n".join(
        json.dumps({"name": tool.name, "description": tool.description, "parameters": tool.parameters})
        for tool in output.tools
    )
    example_name = output.named or output.tools[0].name
    lines = [
        "You can call these tools (name, description, JSON schema of the arguments):",
        described,
        "To call tools, reply with only a JSON array of calls, for example:",
        f'[{{"name": "{example_name}", "arguments": {{...}}}}]',
    ]
    if output.choice is ToolChoice.AUTO:
        lines.append("If no tool is needed, reply in plain text instead.")
    elif output.choice is ToolChoice.REQUIRED:
        lines.append("You must call at least one tool.")
    else:
        lines.append(f"You must call the tool {output.named}.")
    return "\n".join(lines)


def render_calls(calls: Sequence[ToolCall]) -> str:
    """Earlier calls as the JSON array the model itself would have written."""
    return json.dumps([{"name": call.name, "arguments": _loads_or_text(call.arguments)} for call in calls])


def text_or_calls_grammar(calls_schema: dict[str, Any]) -> str:
    """The `auto` grammar: free text, or a calls array valid against `calls_schema` (compact JSON)."""
    return llguidance.LLMatcher.grammar_from_lark(_TEXT_OR_CALLS.replace("{schema}", json.dumps(calls_schema)))


def starts_calls(output: ToolCallOutput, first_text: str) -> bool:
    """Whether a reply that begins with `first_text` is calls (under `auto`, exactly when it starts with `[`)."""
    return output.choice is not ToolChoice.AUTO or first_text.startswith(_CALLS_START)


def read_calls(text: str, output: ToolCallOutput) -> tuple[ToolCall, ...]:
    """The calls of a complete reply, each checked against its tool's schema; raises `OutputViolation`."""
    calls = load_checked(text, {"type": "array", "minItems": 1}, what="tool-call reply")
    parameters = {tool.name: tool.parameters for tool in output.tools}
    read = []
    for call in calls:
        if not isinstance(call, dict) or call.get("name") not in parameters or "arguments" not in call:
            raise OutputViolation(f"the tool-call reply holds a call that names no given tool: {str(call)[:200]}")
        name, arguments = call["name"], call["arguments"]
        problems = violations(arguments, parameters[name] or {})
        if problems:
            reasons = "; ".join(problems[:3])
            raise OutputViolation(f"the arguments of tool {name!r} do not satisfy its schema: {reasons}")
        read.append(ToolCall(new_tool_call_id(), name, json.dumps(arguments, ensure_ascii=False)))
    return tuple(read)


def new_tool_call_id() -> str:
    """9 characters from [a-zA-Z0-9], as la Plateforme requires of tool call ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))


def _loads_or_text(arguments: str) -> object:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
