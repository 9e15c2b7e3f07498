"""`POST /v1/chat/completions`: the request, the response and the stream chunk, Mistral and OpenAI fields.

Messages are a union discriminated on `role`, so a wrong role is reported against the right model.
OpenAI-only spellings (`seed`, `max_completion_tokens`, role `developer`) are accepted beside
la Plateforme's (`random_seed`, `max_tokens`); `galerne.inference.validate` reconciles them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from galerne.protocol.base import MAX_INT32, MAX_UINT64, RequestBody, StrictModel, WireModel


class TextChunk(StrictModel):
    type: Literal["text"]
    text: str


class ImageURL(StrictModel):
    url: str
    detail: str | None = None


class ImageURLChunk(StrictModel):
    type: Literal["image_url"]
    image_url: ImageURL | str


class FileData(StrictModel):
    """OpenAI's file part: an uploaded file's id, or the file itself as a `data:` URL or bare base64."""

    file_id: str | None = Field(default=None, min_length=1, max_length=64)
    filename: str | None = Field(default=None, max_length=255)
    file_data: str | None = None


class FileChunk(StrictModel):
    """A document in a user message: la Plateforme's `{"type": "file", "file_id": …}` or OpenAI's
    `{"type": "file", "file": {"file_id": …}}` / `{"file": {"filename": …, "file_data": …}}`."""

    type: Literal["file"]
    file_id: str | None = Field(default=None, min_length=1, max_length=64)
    file: FileData | None = None


class DocumentURLChunk(StrictModel):
    """la Plateforme's document chunk; Galerne fetches nothing, so only a `data:` URL is accepted."""

    type: Literal["document_url"]
    document_url: str
    document_name: str | None = Field(default=None, max_length=255)


# OpenAI's rule for `name`; it also keeps control tokens such as `<|im_start|>` out of the prompt.
ParticipantName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
ContentChunk = Annotated[TextChunk | ImageURLChunk | FileChunk | DocumentURLChunk, Field(discriminator="type")]
Content = str | list[ContentChunk]


class FunctionCall(StrictModel):
    name: str
    arguments: str | dict[str, Any]


class ToolCall(StrictModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall
    index: int | None = Field(default=None, ge=0, le=MAX_INT32)


class SystemMessage(StrictModel):
    role: Literal["system", "developer"]
    content: Content
    name: ParticipantName | None = None


class UserMessage(StrictModel):
    role: Literal["user"]
    content: Content | None
    name: ParticipantName | None = None


class AssistantMessage(StrictModel):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    prefix: bool = False
    name: ParticipantName | None = None
    refusal: str | None = None


class ToolMessage(StrictModel):
    role: Literal["tool"]
    content: Content | None
    tool_call_id: str | None = None
    name: ParticipantName | None = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionDefinition(StrictModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    strict: bool = False


class Tool(StrictModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(StrictModel):
    name: str


class NamedToolChoice(StrictModel):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["auto", "none", "any", "required"] | NamedToolChoice


class JsonSchemaFormat(StrictModel):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool = False


class ResponseFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(StrictModel):
    include_usage: bool = True


class ChatCompletionRequest(RequestBody):
    """The body of `POST /v1/chat/completions` (la Plateforme's `ChatCompletionRequest` plus OpenAI's).

    Strict, as la Plateforme: `"max_tokens": "10"` or `"stream": "yes"` is a 422, not coerced. Token
    counts are bounded by the engines' 32-bit counters and seeds by the samplers' unsigned 64 bits.
    """

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=0, le=MAX_INT32)
    max_completion_tokens: int | None = Field(default=None, ge=0, le=MAX_INT32)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    random_seed: int | None = Field(default=None, ge=0, le=MAX_UINT64)
    seed: int | None = Field(default=None, ge=0, le=MAX_UINT64)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1, le=16)
    safe_prompt: bool = False
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=-MAX_INT32, le=MAX_INT32)  # 0..20, checked with a 400
    user: str | None = None
    metadata: dict[str, str] | None = None


class PromptTokensDetails(WireModel):
    cached_tokens: int = 0


class Usage(WireModel):
    """Token counts; `num_cached_tokens` (la Plateforme) and `prompt_tokens_details` (OpenAI) both say
    how much of the prompt was served from the prefix cache instead of being computed again."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    num_cached_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()


FinishReason = Literal["stop", "length", "model_length", "error", "tool_calls", "content_filter"]


class ResponseToolCall(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: dict[str, str]
    index: int | None = None


class ResponseMessage(WireModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ResponseToolCall] | None = None
    prefix: bool = False


class TopLogprob(WireModel):
    """One alternative token: its text (`bytes:\\xe2\\x80` when it is not whole UTF-8), log-probability, bytes."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(WireModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(WireModel):
    """OpenAI's `choices[i].logprobs`: one entry per token of the reply's content."""

    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class Choice(WireModel):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None = None


class DocumentReference(WireModel):
    """A passage of a document the answer was given, for the client to show as a source; the answer may cite
    it as `[id]`. Set only on requests that send documents."""

    id: int
    file_id: str
    filename: str
    chunk_index: int
    page_start: int | None
    page_end: int | None
    score: float
    text: str


class ChatCompletionResponse(WireModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    references: list[DocumentReference] | None = None


class Delta(WireModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ResponseToolCall] | None = None


class ChunkChoice(WireModel):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(WireModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    references: list[DocumentReference] | None = None  # on the first chunk, so sources show while it streams
