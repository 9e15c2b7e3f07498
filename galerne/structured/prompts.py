"""Tell the model about its tools and the expected JSON, for models whose template has no tool format.

The grammar makes the shape certain; the instructions make the content sensible (a grammar alone
pushes a model out of distribution: llguidance's docs show it filling `name` with prose). Earlier
calls in the history are written back in the very format the model is asked to produce.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from galerne.inference.constraints import JsonOutput, OutputConstraint, ToolCallOutput, ToolChoice
from galerne.inference.types import ChatMessage, Role, ToolCall


def with_output_instructions(
    messages: Sequence[ChatMessage], constraint: OutputConstraint | None
) -> tuple[ChatMessage, ...]:
    """The conversation as plain text messages, with instructions for `constraint` in the system turn."""
    flattened = [_flatten(message) for message in messages]
    instructions = _instructions(constraint)
    if not instructions:
        return tuple(flattened)
    if flattened and flattened[0].role is Role.SYSTEM:
        first = flattened[0]
        flattened[0] = replace(first, content=f"{first.content}\n\n{instructions}" if first.content else instructions)
    else:
        flattened.insert(0, ChatMessage(role=Role.SYSTEM, content=instructions))
    return tuple(flattened)


def calls_as_text(calls: Sequence[ToolCall]) -> str:
    """Earlier calls as the JSON array the model itself would have written."""
    return json.dumps([{"name": call.name, "arguments": _loads_or_text(call.arguments)} for call in calls])


def _flatten(message: ChatMessage) -> ChatMessage:
    if not message.tool_calls:
        return message
    calls = calls_as_text(message.tool_calls)
    content = f"{message.content}\n{calls}" if message.content else calls
    return replace(message, content=content, tool_calls=())


def _instructions(constraint: OutputConstraint | None) -> str:
    if isinstance(constraint, JsonOutput):
        # The grammar already holds the reply to the schema and writes its keys; repeating a large schema
        # here would cost more prefill than the whole reply (hundreds of tokens on every request).
        return "Reply with a single JSON object." if constraint.schema is None else "Reply in JSON only."
    if isinstance(constraint, ToolCallOutput):
        return _tool_instructions(constraint)
    return ""


def _tool_instructions(output: ToolCallOutput) -> str:
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


def _loads_or_text(arguments: str) -> object:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
