"""The OpenAI-compatible wire as an upstream speaks it: the request body Galerne sends, and the replies it reads.

One owner for the upstream's field names, so the remote engine only moves bytes. Upstreams differ in a few
names: OpenAI, Azure and vLLM take `seed` and `tool_choice: "required"`; la Plateforme (`dialect = "mistral"`)
takes `random_seed` and `tool_choice: "any"`, refuses fields it does not know, and puts usage in its last
chunk without being asked. Constraints pass through as the upstream's own fields (`response_format`
with `json_schema`, `tools` and `tool_choice`): vLLM turns them into its structured outputs, la Plateforme
and OpenAI into theirs.

Example::

    body = request_body(request, upstream_model="mistral-small", dialect="mistral")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from galerne.inference.constraints import JsonOutput, OutputConstraint, ToolCallOutput, ToolChoice
from galerne.inference.types import FinishReason, GenerationRequest, ToolCall

Dialect = Literal["openai", "mistral"]

FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "model_length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
}


def request_body(request: GenerationRequest, *, upstream_model: str, dialect: Dialect = "openai") -> dict[str, Any]:
    """The upstream request for one choice (its seed already offset by `SamplingParams.for_choice`).

    `max_tokens` goes only when the client set it: the upstream counts its own prompt tokens, where the
    gateway only estimates them, so "what is left of the context" is the upstream's to work out.
    """
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        entry: dict[str, Any] = {"role": message.role.value, "content": message.content}
        if message.name:
            entry["name"] = message.name
        if message.tool_call_id:
            entry["tool_call_id"] = message.tool_call_id
        if message.tool_calls:
            entry["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in message.tool_calls
            ]
        messages.append(entry)
    if request.assistant_prefix is not None:
        messages.append({"role": "assistant", "content": request.assistant_prefix, "prefix": True})
    sampling = request.sampling
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": messages,
        "stream": request.is_streamed,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
    }
    if sampling.max_tokens is not None:
        body["max_tokens"] = sampling.max_tokens
    if request.is_streamed and dialect == "openai":
        body["stream_options"] = {"include_usage": True}
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["random_seed" if dialect == "mistral" else "seed"] = sampling.seed
    if sampling.presence_penalty:
        body["presence_penalty"] = sampling.presence_penalty
    if sampling.frequency_penalty:
        body["frequency_penalty"] = sampling.frequency_penalty
    body.update(constraint_fields(request.constraint, dialect))
    return body


def constraint_fields(constraint: OutputConstraint | None, dialect: Dialect) -> dict[str, Any]:
    """`response_format` or `tools` + `tool_choice` for a validated constraint; nothing for free text."""
    if isinstance(constraint, JsonOutput):
        if constraint.schema is None:
            return {"response_format": {"type": "json_object"}}
        schema = {"name": constraint.name, "schema": constraint.schema, "strict": constraint.strict}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    if isinstance(constraint, ToolCallOutput):
        tools = []
        for tool in constraint.tools:
            function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
            if tool.description:
                function["description"] = tool.description
            if tool.strict:
                function["strict"] = True
            tools.append({"type": "function", "function": function})
        choice: str | dict[str, Any]
        if constraint.choice is ToolChoice.NAMED:
            choice = {"type": "function", "function": {"name": constraint.named}}
        elif constraint.choice is ToolChoice.REQUIRED:
            choice = "any" if dialect == "mistral" else "required"
        else:
            choice = "auto"
        fields: dict[str, Any] = {"tools": tools, "tool_choice": choice}
        if not constraint.allows_parallel_calls:
            fields["parallel_tool_calls"] = False
        return fields
    return {}


def embedding_body(
    texts: Sequence[str], *, upstream_model: str, dimensions: int | None, dialect: Dialect = "openai"
) -> dict[str, Any]:
    """`POST /embeddings` for an upstream: floats always (a base64 client is answered by Galerne itself)."""
    body: dict[str, Any] = {"model": upstream_model, "input": list(texts), "encoding_format": "float"}
    if dimensions is not None:
        body["output_dimension" if dialect == "mistral" else "dimensions"] = dimensions
    return body


# What is read from the upstream. Parsing it whole with pydantic turns any malformed answer (a wrong type,
# a missing field, a count that is not an integer) into one ValueError, answered 502, never a crash mid-stream.
class Usage(BaseModel):
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)


class _EmbeddingItem(BaseModel):
    embedding: list[float]
    index: int = Field(default=0, ge=0)


class EmbeddingReply(BaseModel):
    data: list[_EmbeddingItem]
    usage: Usage | None = None

    def vectors(self, num_inputs: int) -> list[list[float]]:
        """The vectors in input order; a ValueError unless there is exactly one per input, of one size."""
        items = sorted(self.data, key=lambda item: item.index)
        if [item.index for item in items] != list(range(num_inputs)) or len({len(i.embedding) for i in items}) > 1:
            raise ValueError(f"expected one embedding per input ({num_inputs}), all of one size")
        return [item.embedding for item in items]


class _FunctionDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(BaseModel):
    index: int = Field(default=0, ge=0, le=255)
    id: str | None = None
    function: _FunctionDelta | None = None


class _Delta(BaseModel):
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _ChunkChoice(BaseModel):
    delta: _Delta | None = None
    finish_reason: str | None = None


class Chunk(BaseModel):
    choices: list[_ChunkChoice] = []
    usage: Usage | None = None


class _Function(BaseModel):
    name: str
    arguments: str = "{}"


class _ToolCall(BaseModel):
    id: str
    function: _Function


class _Message(BaseModel):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(BaseModel):
    message: _Message
    finish_reason: str | None = None


class Reply(BaseModel):
    choices: list[_Choice] = Field(min_length=1)
    usage: Usage | None = None

    def tool_calls(self) -> tuple[ToolCall, ...]:
        calls = self.choices[0].message.tool_calls or []
        return tuple(ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments) for call in calls)


class ToolCallAssembler:
    """Streamed tool calls arrive in pieces (id and name first, then fragments of the arguments), keyed by
    index; they are held back and handed over whole with the reply's last event, as the embedded engine does."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str, str, list[str]]] = {}

    def add(self, deltas: list[_ToolCallDelta]) -> None:
        for delta in deltas:
            call_id, name, arguments = self._calls.get(delta.index, ("", "", []))
            function = delta.function or _FunctionDelta()
            self._calls[delta.index] = (call_id or delta.id or "", name or function.name or "", arguments)
            if function.arguments:
                arguments.append(function.arguments)

    def calls(self) -> tuple[ToolCall, ...]:
        if any(not name for _, name, _ in self._calls.values()):
            raise ValueError("a streamed tool call came without its function name")
        return tuple(
            ToolCall(id=call_id, name=name, arguments="".join(arguments) or "{}")
            for _, (call_id, name, arguments) in sorted(self._calls.items())
        )
