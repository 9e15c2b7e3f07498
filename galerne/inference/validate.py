"""The only way from a wire `ChatCompletionRequest` to a `GenerationRequest`.

Schema checks (types, ranges) already happened in pydantic and give 422; what is left here are
la Plateforme's semantic rules, which give 400 with a message saying how to fix the request.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from jsonschema import Draft202012Validator, SchemaError

from galerne.errors import InvalidRequestError, UnsupportedFeatureError
from galerne.inference.constraints import JsonOutput, OutputConstraint, ToolCallOutput, ToolChoice, ToolSpec
from galerne.inference.schema_limits import check_schema_limits
from galerne.inference.types import (
    ChatMessage,
    DocumentRef,
    GenerationRequest,
    LogprobOptions,
    Role,
    SamplingParams,
    ToolCall,
)
from galerne.protocol import chat as wire

DEFAULT_TEMPERATURE = 0.7
MAX_STOP_SEQUENCES = 16
MAX_STOP_LENGTH = 256
MAX_TOP_LOGPROBS = 20  # OpenAI's bound for `top_logprobs`, and vLLM's default for both APIs
MAX_DOCUMENTS = 16  # documents one chat call may hand over (files or inline)
# JSON levels (objects and arrays) a schema may nest: real schemas stay far below; checking one much deeper
# exhausts Python's recursion in `jsonschema` (about 200 levels) — a 500 instead of a 400.

# la Plateforme's `safe_prompt` system prompt (its guardrailing guide).
SAFE_PROMPT = (
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. "
    "Avoid harmful, unethical, prejudiced, or negative content. "
    "Ensure replies promote fairness and positivity."
)

_ALLOWED_AFTER: dict[Role, frozenset[Role]] = {
    Role.SYSTEM: frozenset({Role.SYSTEM, Role.USER, Role.ASSISTANT}),
    Role.USER: frozenset({Role.USER, Role.ASSISTANT, Role.SYSTEM}),
    Role.ASSISTANT: frozenset({Role.USER, Role.ASSISTANT, Role.TOOL, Role.SYSTEM}),
    Role.TOOL: frozenset({Role.ASSISTANT, Role.TOOL, Role.USER}),
}


def to_generation_request(
    request: wire.ChatCompletionRequest, *, model_id: str, default_temperature: float = DEFAULT_TEMPERATURE
) -> GenerationRequest:
    """Check la Plateforme's rules and normalise; raises `InvalidRequestError` (400) on a violation.

    Example: ``to_generation_request(ChatCompletionRequest(model="m", messages=[...]), model_id="m")``.
    """
    logprobs = chat_logprobs(request.logprobs, request.top_logprobs)
    messages = [_normalise(message, index, model_id) for index, message in enumerate(request.messages)]
    prefix = _split_prefix(request.messages, messages)
    _check_order(messages, has_prefix=prefix is not None)
    _check_tool_results(messages)
    if request.safe_prompt:
        messages.insert(0, ChatMessage(role=Role.SYSTEM, content=SAFE_PROMPT))
    sampling = _sampling(request, default_temperature)
    constraint = _constraint(request)
    _check_stop_with(constraint, sampling.stop)
    if logprobs is not None and constraint is not None:
        raise InvalidRequestError(
            "`logprobs` cannot be combined with `tools` or a JSON `response_format` yet: tokens the grammar "
            "forces are never scored by the model. Remove `logprobs`, or the constraint",
            param="logprobs",
        )
    return GenerationRequest(
        messages=tuple(messages),
        sampling=sampling,
        assistant_prefix=prefix,
        constraint=constraint,
        is_streamed=request.stream,
        num_choices=request.n,
        logprobs=logprobs,
        documents=documents_of(request.messages, offset=1 if request.safe_prompt else 0),
    )


def documents_of(raw: Sequence[wire.Message], *, offset: int = 0) -> tuple[DocumentRef, ...]:
    """The documents the user messages hand over, in order: file ids, or inline files (`data:` URLs or base64).
    Each names its message's index in the normalised conversation (`offset`: messages added before it)."""
    documents: list[DocumentRef] = []
    for index, message in enumerate(raw):
        if not isinstance(message, wire.UserMessage) or isinstance(message.content, str | None):
            continue
        for chunk in message.content:
            if isinstance(chunk, wire.FileChunk | wire.DocumentURLChunk):
                documents.append(replace(_document(chunk, index), message_index=index + offset))
    if len(documents) > MAX_DOCUMENTS:
        raise InvalidRequestError(
            f"{len(documents)} documents in one request; send at most {MAX_DOCUMENTS}", param="messages"
        )
    return tuple(documents)


def _document(chunk: wire.FileChunk | wire.DocumentURLChunk, index: int) -> DocumentRef:
    param = f"messages[{index}].content"
    if isinstance(chunk, wire.DocumentURLChunk):
        if not chunk.document_url.startswith("data:"):
            raise UnsupportedFeatureError(
                "Galerne does not fetch URLs: send the document as a `data:` URL, or upload it to /v1/files and "
                "send {\"type\": \"file\", \"file_id\": …}",
                param=param,
            )
        return _inline(chunk.document_url, chunk.document_name, index, param)
    file_id = chunk.file_id or (chunk.file.file_id if chunk.file is not None else None)
    file_data = chunk.file.file_data if chunk.file is not None else None
    if (file_id is None) == (file_data is None):
        raise InvalidRequestError("a file chunk needs either a `file_id` or `file_data`, not both", param=param)
    if file_id is not None:
        return DocumentRef(message_index=index, file_id=file_id)
    assert file_data is not None  # checked just above
    return _inline(file_data, chunk.file.filename if chunk.file is not None else None, index, param)


def _inline(url: str, filename: str | None, index: int, param: str) -> DocumentRef:
    """Decode a `data:<mime>;base64,<data>` URL (or bare base64); the name's extension tells the format."""
    header, _, payload = url.partition(",") if url.startswith("data:") else ("", "", url)
    mime_type = header.removeprefix("data:").split(";")[0]
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f"the inline document is not valid base64: {exc}", param=param) from exc
    if filename is None:
        extension = mimetypes.guess_extension(mime_type) if mime_type else None
        if extension is None:
            raise InvalidRequestError(
                "an inline document needs a `filename` (or a `data:` URL with its media type) to tell its format",
                param=param,
            )
        filename = f"document{extension}"
    return DocumentRef(message_index=index, filename=filename, data=data)


def normalise_messages(raw: Sequence[wire.Message], *, model_id: str) -> list[ChatMessage]:
    """Messages as the engines take them (chunk lists joined), for uses other than a chat completion
    (a conversation sent to the moderation API); raises 400 on an empty list."""
    if not raw:
        raise InvalidRequestError("the conversation is empty; send at least one message", param="input")
    return [_normalise(message, index, model_id) for index, message in enumerate(raw)]


def chat_logprobs(logprobs: bool, top_logprobs: int | None) -> LogprobOptions | None:
    """OpenAI's `logprobs` / `top_logprobs` pair: the alternatives need `logprobs: true` and are at most 20."""
    if top_logprobs is not None:
        if not logprobs:
            raise InvalidRequestError("`top_logprobs` needs `logprobs: true`", param="top_logprobs")
        check_num_top(top_logprobs, param="top_logprobs")
    return LogprobOptions(num_top=top_logprobs or 0) if logprobs else None


def check_num_top(num_top: int, *, param: str) -> None:
    if not 0 <= num_top <= MAX_TOP_LOGPROBS:
        raise InvalidRequestError(
            f"`{param}` is {num_top}; it must be between 0 and {MAX_TOP_LOGPROBS}", param=param
        )


def _check_stop_with(constraint: OutputConstraint | None, stop: tuple[str, ...]) -> None:
    """A stop string could cut a guaranteed shape in the middle, so it is refused where the whole reply
    is constrained. Under `tool_choice: auto` stop strings apply to a text reply, never to a call."""
    if not stop:
        return
    if isinstance(constraint, JsonOutput):
        raise InvalidRequestError(
            "`stop` cannot be combined with a JSON `response_format`: a stop string could cut the JSON short, "
            "and the reply already ends when the JSON is complete. Remove `stop`",
            param="stop",
        )
    if isinstance(constraint, ToolCallOutput) and constraint.choice is not ToolChoice.AUTO:
        raise InvalidRequestError(
            "`stop` cannot be combined with a `tool_choice` that forces a tool call: a stop string could cut the "
            "call short, and the reply already ends when the call is complete. Remove `stop`, or use "
            "`tool_choice: auto`, where stop strings apply to text replies only",
            param="stop",
        )


def _constraint(request: wire.ChatCompletionRequest) -> OutputConstraint | None:
    """The shape the reply must have: a JSON schema, tool calls, or nothing (free text)."""
    response_format = request.response_format
    json_format = response_format if response_format is not None and response_format.type != "text" else None
    if request.tool_choice is not None and not request.tools:
        raise InvalidRequestError("`tool_choice` needs `tools`", param="tool_choice")
    if request.tools and json_format is not None:
        raise InvalidRequestError("send either `tools` or a JSON `response_format`, not both", param="response_format")
    if request.tools:
        return _tool_output(request.tools, request.tool_choice, request.parallel_tool_calls)
    if json_format is not None:
        return _json_output(json_format)
    return None


def _json_output(response_format: wire.ResponseFormat) -> JsonOutput:
    if response_format.type == "json_object":
        return JsonOutput(schema=None)
    json_schema = response_format.json_schema
    if json_schema is None:
        raise InvalidRequestError(
            "response_format of type json_schema needs a `json_schema` with a `schema`",
            param="response_format.json_schema",
        )
    _check_schema(json_schema.schema_, param="response_format.json_schema.schema")
    return JsonOutput(schema=json_schema.schema_, name=json_schema.name, strict=json_schema.strict)


def _tool_output(
    tools: list[wire.Tool], tool_choice: wire.ToolChoice | None, allows_parallel_calls: bool
) -> ToolCallOutput | None:
    specs = tuple(
        ToolSpec(
            name=tool.function.name,
            description=tool.function.description,
            parameters=tool.function.parameters,
            strict=tool.function.strict,
        )
        for tool in tools
    )
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise InvalidRequestError("tool names must be unique", param="tools")
    for index, spec in enumerate(specs):
        _check_schema(spec.parameters, param=f"tools[{index}].function.parameters")
    if tool_choice is None or tool_choice == "auto":
        return ToolCallOutput(specs, ToolChoice.AUTO, allows_parallel_calls=allows_parallel_calls)
    if tool_choice == "none":
        return None
    if not isinstance(tool_choice, wire.NamedToolChoice):  # "any" or "required"
        return ToolCallOutput(specs, ToolChoice.REQUIRED, allows_parallel_calls=allows_parallel_calls)
    if tool_choice.function.name not in names:
        raise InvalidRequestError(
            f"tool_choice names {tool_choice.function.name!r}, which is not among the tools ({', '.join(names)})",
            param="tool_choice",
        )
    return ToolCallOutput(specs, ToolChoice.NAMED, named=tool_choice.function.name)


def _check_schema(schema: dict[str, Any], *, param: str) -> None:
    check_schema_limits(schema, param=param)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequestError(f"invalid JSON schema: {exc.message}", param=param) from exc


def _normalise(message: wire.Message, index: int, model_id: str) -> ChatMessage:
    role = Role.SYSTEM if message.role == "developer" else Role(message.role)
    content = _text_of(message.content, index, model_id, role)
    if isinstance(message, wire.AssistantMessage) and message.tool_calls:
        calls = tuple(_tool_call(call, index, position) for position, call in enumerate(message.tool_calls))
        return ChatMessage(role=role, content=content, name=message.name, tool_calls=calls)
    if isinstance(message, wire.ToolMessage):
        return ChatMessage(role=role, content=content, name=message.name, tool_call_id=message.tool_call_id)
    return ChatMessage(role=role, content=content, name=message.name)


def _tool_call(call: wire.ToolCall, index: int, position: int) -> ToolCall:
    if not call.id or call.id == "null":
        raise InvalidRequestError(
            f"messages[{index}].tool_calls[{position}]: the call needs the `id` it was given",
            param=f"messages[{index}].tool_calls[{position}].id",
        )
    arguments = call.function.arguments
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ToolCall(id=call.id, name=call.function.name, arguments=text)


def _check_tool_results(messages: list[ChatMessage]) -> None:
    """Every tool call is answered by exactly one tool message, right after it, with its id."""
    pending: dict[str, str] = {}
    for index, message in enumerate(messages):
        if message.role is Role.TOOL:
            if not message.tool_call_id:
                raise InvalidRequestError(
                    f"messages[{index}]: a tool message needs the `tool_call_id` of the call it answers",
                    param=f"messages[{index}].tool_call_id",
                )
            if message.tool_call_id not in pending:
                expected = ", ".join(pending) or "none are pending"
                raise InvalidRequestError(
                    f"messages[{index}]: tool_call_id {message.tool_call_id!r} does not match a call of the "
                    f"previous assistant message (expected one of: {expected})",
                    param=f"messages[{index}].tool_call_id",
                )
            del pending[message.tool_call_id]
            continue
        if pending:
            raise InvalidRequestError(
                f"messages[{index}]: tool calls {', '.join(pending)} have no tool message with their result",
                param=f"messages[{index}]",
            )
        ids = [call.id for call in message.tool_calls]
        if len(set(ids)) != len(ids):
            raise InvalidRequestError(f"messages[{index}]: tool call ids repeat", param=f"messages[{index}].tool_calls")
        pending = {call.id: call.name for call in message.tool_calls}
    if pending:
        raise InvalidRequestError(
            f"tool calls {', '.join(pending)} have no tool message with their result", param="messages"
        )


def _text_of(content: wire.Content | None, index: int, model_id: str, role: Role | None = None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for chunk in content:
        if isinstance(chunk, wire.FileChunk | wire.DocumentURLChunk) and role is Role.USER:
            continue  # collected by `documents_of`; the documents service puts their text in the prompt
        if not isinstance(chunk, wire.TextChunk):
            raise UnsupportedFeatureError(
                f"messages[{index}]: model {model_id!r} accepts text only, not {chunk.type!r} chunks",
                param=f"messages[{index}].content",
            )
        parts.append(chunk.text)
    return "".join(parts)


def _split_prefix(raw: list[wire.Message], messages: list[ChatMessage]) -> str | None:
    """Take a last `prefix: true` assistant message off the conversation; it must be last."""
    for index, message in enumerate(raw[:-1]):
        if isinstance(message, wire.AssistantMessage) and message.prefix:
            raise InvalidRequestError(
                f"messages[{index}]: only the last message may be an assistant message with `prefix: true`",
                param=f"messages[{index}].prefix",
            )
    last = raw[-1]
    if isinstance(last, wire.AssistantMessage) and last.prefix:
        return messages.pop().content
    return None


def _check_order(messages: list[ChatMessage], *, has_prefix: bool) -> None:
    if not messages:
        raise InvalidRequestError(
            "the conversation needs a user message before the assistant prefix", param="messages"
        )
    if messages[0].role not in (Role.SYSTEM, Role.USER):
        raise InvalidRequestError(
            f"Expected first role User or System, got {messages[0].role.value}", param="messages[0].role"
        )
    for index in range(1, len(messages)):
        previous, current = messages[index - 1].role, messages[index].role
        if current not in _ALLOWED_AFTER[previous]:
            raise InvalidRequestError(
                f"Unexpected role '{current.value}' after role '{previous.value}'",
                param=f"messages[{index}].role",
            )
    last = messages[-1].role
    if has_prefix and last not in (Role.USER, Role.TOOL, Role.SYSTEM):
        raise InvalidRequestError(
            "an assistant prefix must follow a user or tool message", param=f"messages[{len(messages)}]"
        )
    if not has_prefix and last not in (Role.USER, Role.TOOL):
        raise InvalidRequestError(
            f"Expected last role User or Tool (or Assistant with prefix True) for serving, but got {last.value}",
            param=f"messages[{len(messages) - 1}].role",
        )


def _sampling(request: wire.ChatCompletionRequest, default_temperature: float) -> SamplingParams:
    max_tokens = _one_of(request.max_tokens, request.max_completion_tokens, "max_tokens", "max_completion_tokens")
    seed = _one_of(request.random_seed, request.seed, "random_seed", "seed")
    stop = checked_stop(request.stop)
    return SamplingParams(
        temperature=default_temperature if request.temperature is None else request.temperature,
        top_p=request.top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
    )


def checked_stop(stop: str | list[str] | None) -> tuple[str, ...]:
    """The stop sequences, at most 16 of at most 256 characters each, none empty."""
    sequences = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed", param="stop")
    if any(not item or len(item) > MAX_STOP_LENGTH for item in sequences):
        raise InvalidRequestError(
            f"stop sequences must be non-empty and at most {MAX_STOP_LENGTH} characters", param="stop"
        )
    return sequences


def _one_of(first: int | None, second: int | None, first_name: str, second_name: str) -> int | None:
    if first is not None and second is not None and first != second:
        raise InvalidRequestError(
            f"`{first_name}` and `{second_name}` disagree ({first} vs {second}); send only one", param=first_name
        )
    return first if first is not None else second
