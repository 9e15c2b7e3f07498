"""Read a constrained reply as it is generated, and check it once it is finished.

One `OutputReader` per constrained sequence, on the engine thread. While the reply grows it says
whether the text is reply text or part of a tool call (so the consumer can hold calls back and never
shows them as text); when the reply ends it returns the typed calls, or checks the JSON against the
caller's schema. A reply that fails raises `OutputViolation`: the engine turns it into an error, never
into a success.
"""

from __future__ import annotations

from galerne.inference.constraints import JsonOutput, OutputConstraint, ToolCallOutput
from galerne.inference.types import ToolCall
from galerne.structured import tool_format
from galerne.structured.checks import OutputViolation, load_checked
from galerne.structured.schemas import ANY_OBJECT

__all__ = ["OutputReader", "OutputViolation"]


class OutputReader:
    """Follows one reply: `push` each new piece of text, then `finish` once it has ended."""

    def __init__(self, constraint: OutputConstraint) -> None:
        self._constraint = constraint
        self._pieces: list[str] = []
        self._is_tool_call: bool | None = None  # decided by the first text

    @property
    def is_tool_call(self) -> bool:
        """The reply is (so far) a tool call: its text must never be shown as reply text."""
        return bool(self._is_tool_call)

    @property
    def is_free_text(self) -> bool:
        """The reply is plain text (tools were offered with `auto` and the model chose to answer)."""
        return self._is_tool_call is False and isinstance(self._constraint, ToolCallOutput)

    @property
    def is_decided(self) -> bool:
        return self._is_tool_call is not None

    def decides_tool_call(self, first_text: str) -> bool:
        """Whether a reply beginning with `first_text` is calls; fixes the answer at the first text."""
        if self._is_tool_call is None and first_text:
            output = self._constraint
            self._is_tool_call = isinstance(output, ToolCallOutput) and tool_format.starts_calls(output, first_text)
        return self.is_tool_call

    def push(self, text: str) -> bool:
        """Take new text; returns whether it belongs to a tool call."""
        self.decides_tool_call(text)
        self._pieces.append(text)
        return self.is_tool_call

    def finish(self) -> tuple[ToolCall, ...]:
        """Check the complete reply: its tool calls (none for text or JSON); raises `OutputViolation`."""
        text = "".join(self._pieces)
        constraint = self._constraint
        if isinstance(constraint, JsonOutput):
            schema = constraint.schema if constraint.schema is not None else ANY_OBJECT
            load_checked(text, schema, what="JSON reply")
            return ()
        if self.is_tool_call:
            return tool_format.read_calls(text, constraint)
        return ()
