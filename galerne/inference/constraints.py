"""What a request guarantees about its output's shape, independent of any engine or grammar library.

A constraint is data: a JSON schema, or tools plus a choice mode. Each engine turns it into its own
mechanism (llguidance grammars for the embedded engine, vLLM's structured outputs for vLLM).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class JsonOutput:
    """The reply is a JSON value; `schema` None means any JSON object (`json_object` mode).

    `strict` (OpenAI's and la Plateforme's flag) closes objects that do not say otherwise: only the
    declared properties may appear, as OpenAI's strict mode requires.
    """

    schema: dict[str, Any] | None = None
    name: str = "response"
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    strict: bool = False


class ToolChoice(StrEnum):
    AUTO = "auto"  # text, or calls
    REQUIRED = "required"  # at least one call (la Plateforme's `any` too)
    NAMED = "named"  # one call of `ToolCallOutput.named`


@dataclass(frozen=True, slots=True)
class ToolCallOutput:
    """The reply is text or calls to `tools` (depending on `choice`); arguments match each tool's schema."""

    tools: tuple[ToolSpec, ...]
    choice: ToolChoice = ToolChoice.AUTO
    named: str | None = None
    allows_parallel_calls: bool = True


OutputConstraint = JsonOutput | ToolCallOutput
