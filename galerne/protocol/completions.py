"""`POST /v1/completions` (OpenAI's legacy text completion) and `POST /v1/fim/completions` (la Plateforme's
fill in the middle): requests, and the text-completion response and stream chunk.

A FIM reply has the chat completion's shape (`galerne.protocol.chat`), as on la Plateforme.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from galerne.protocol.base import MAX_INT32, MAX_UINT64, RequestBody, WireModel
from galerne.protocol.chat import StreamOptions, Usage


class CompletionRequest(RequestBody):
    """The body of `POST /v1/completions`. `prompt` is one text (or a list holding one); `logprobs` is how
    many alternatives to return per token (0..20), `echo` returns the prompt with its log-probabilities."""

    model: str = Field(min_length=1)
    prompt: str | list[str]
    suffix: str | None = None
    max_tokens: int | None = Field(default=16, ge=0, le=MAX_INT32)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(default=None, ge=-MAX_INT32, le=MAX_INT32)  # 0..20, checked with a 400
    echo: bool = False
    stop: str | list[str] | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    best_of: int | None = Field(default=None, ge=1, le=MAX_INT32)
    logit_bias: dict[str, Any] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_UINT64)
    user: str | None = None


class FimCompletionRequest(RequestBody):
    """The body of `POST /v1/fim/completions`, la Plateforme's fields (`min_tokens` too; `metadata` and
    `prompt_cache_key` are accepted and ignored: the engine reuses cached prefixes by itself)."""

    model: str = Field(min_length=1)
    prompt: str
    suffix: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=0, le=MAX_INT32)
    min_tokens: int | None = Field(default=None, ge=0, le=MAX_INT32)
    stream: bool = False
    stop: str | list[str] | None = None
    random_seed: int | None = Field(default=None, ge=0, le=MAX_UINT64)
    metadata: dict[str, Any] | None = None
    prompt_cache_key: str | None = None


class CompletionLogprobs(WireModel):
    """OpenAI's legacy log-probabilities: parallel lists over the returned tokens (the prompt's, with `echo`).

    `token_logprobs[0]` and `top_logprobs[0]` are null for a prompt's first token, which nothing predicts;
    `text_offset` is each token's character offset in the choice's `text`.
    """

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


FinishReason = Literal["stop", "length", "error"]


class CompletionChoice(WireModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None


class CompletionResponse(WireModel):
    """The reply, and (streamed) each chunk: text deltas per choice; `usage` only on the last chunk."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
