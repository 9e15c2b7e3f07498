"""The only way from a wire `ChatCompletionRequest` to a `GenerationRequest`.

Schema checks (types, ranges) already happened in pydantic and give 422; what is left here are
la Plateforme's semantic rules, which give 400 with a message saying how to fix the request.
"""

from __future__ import annotations

from galerne.errors import InvalidRequestError, UnsupportedFeatureError
from galerne.inference.types import ChatMessage, GenerationRequest, Role, SamplingParams
from galerne.protocol import chat as wire

DEFAULT_TEMPERATURE = 0.7
MAX_STOP_SEQUENCES = 16
MAX_STOP_LENGTH = 256

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
    _refuse_unsupported(request, model_id)
    messages = [_normalise(message, index, model_id) for index, message in enumerate(request.messages)]
    prefix = _split_prefix(request.messages, messages)
    _check_order(messages, has_prefix=prefix is not None)
    if request.safe_prompt:
        messages.insert(0, ChatMessage(role=Role.SYSTEM, content=SAFE_PROMPT))
    sampling = _sampling(request, default_temperature)
    return GenerationRequest(messages=tuple(messages), sampling=sampling, assistant_prefix=prefix)


def _refuse_unsupported(request: wire.ChatCompletionRequest, model_id: str) -> None:
    """Refuse, rather than silently ignore, what this model cannot guarantee yet."""
    if request.tools or request.tool_choice is not None:
        raise UnsupportedFeatureError(
            f"model {model_id!r} does not support function calling yet; remove `tools` and `tool_choice`",
            param="tools",
        )
    if request.response_format is not None and request.response_format.type != "text":
        raise UnsupportedFeatureError(
            f"response_format {request.response_format.type!r} is not supported by model {model_id!r} yet; "
            "use {'type': 'text'}",
            param="response_format",
        )
    if request.logprobs or request.top_logprobs:
        raise UnsupportedFeatureError("logprobs are not supported; remove `logprobs`", param="logprobs")


def _normalise(message: wire.Message, index: int, model_id: str) -> ChatMessage:
    role = Role.SYSTEM if message.role == "developer" else Role(message.role)
    if isinstance(message, wire.AssistantMessage) and message.tool_calls:
        raise UnsupportedFeatureError(
            f"messages[{index}]: assistant `tool_calls` need function calling, which model {model_id!r} "
            "does not support yet",
            param=f"messages[{index}].tool_calls",
        )
    return ChatMessage(role=role, content=_text_of(message.content, index, model_id), name=message.name)


def _text_of(content: wire.Content | None, index: int, model_id: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for chunk in content:
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
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed", param="stop")
    if any(not item or len(item) > MAX_STOP_LENGTH for item in stop):
        raise InvalidRequestError(
            f"stop sequences must be non-empty and at most {MAX_STOP_LENGTH} characters", param="stop"
        )
    return SamplingParams(
        temperature=default_temperature if request.temperature is None else request.temperature,
        top_p=request.top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
    )


def _one_of(first: int | None, second: int | None, first_name: str, second_name: str) -> int | None:
    if first is not None and second is not None and first != second:
        raise InvalidRequestError(
            f"`{first_name}` and `{second_name}` disagree ({first} vs {second}); send only one", param=first_name
        )
    return first if first is not None else second
