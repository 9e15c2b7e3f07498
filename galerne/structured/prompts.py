"""Tell the model about its tools and the expected JSON, for models whose template has no tool format.

The grammar makes the shape certain; the instructions make the content sensible (a grammar alone
pushes a model out of distribution: llguidance's docs show it filling `name` with prose). Earlier
calls in the history are written back in the very format the model is asked to produce (both
belong to `tool_format`, the format's one owner).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from galerne.inference.constraints import JsonOutput, OutputConstraint, ToolCallOutput
from galerne.inference.types import ChatMessage, Role
from galerne.structured import tool_format


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


def _flatten(message: ChatMessage) -> ChatMessage:
    if not message.tool_calls:
        return message
    calls = tool_format.render_calls(message.tool_calls)
    content = f"{message.content}\n{calls}" if message.content else calls
    return replace(message, content=content, tool_calls=())


def _instructions(constraint: OutputConstraint | None) -> str:
    if isinstance(constraint, JsonOutput):
        # The grammar already holds the reply to the schema and writes its keys; repeating a large schema
        # here would cost more prefill than the whole reply (hundreds of tokens on every request).
        return "Reply with a single JSON object." if constraint.schema is None else "Reply in JSON only."
    if isinstance(constraint, ToolCallOutput):
        return tool_format.describe(constraint)
    return ""
