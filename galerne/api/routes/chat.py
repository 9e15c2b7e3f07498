"""`POST /v1/chat/completions`, and `POST /v1/fim/completions`, which answers in the same shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from galerne.api.answering import answer
from galerne.api.deps import PrincipalDep, Runtime, RuntimeDep
from galerne.api.errors import error_responses
from galerne.api.sse import event_stream_content
from galerne.protocol.chat import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from galerne.protocol.completions import FimCompletionRequest
from galerne.services.chat import ChatRun

router = APIRouter(responses=error_responses(400, 401, 404, 413, 422, 429, 500, 502, 503, 504))


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    response_model_exclude_none=False,
    responses={200: {"content": event_stream_content(ChatCompletionChunk)}},  # with `stream: true`
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, principal: PrincipalDep, runtime: RuntimeDep
) -> Any:
    """Chat with a model; `stream: true` answers with server-sent events."""
    run = await runtime.chat.start(body, principal)
    return await _answer(request, runtime, run, is_streamed=body.stream)


@router.post(
    "/v1/fim/completions",
    response_model=ChatCompletionResponse,
    response_model_exclude_none=False,
    responses={200: {"content": event_stream_content(ChatCompletionChunk)}},  # with `stream: true`
)
async def fim_completions(
    body: FimCompletionRequest, request: Request, principal: PrincipalDep, runtime: RuntimeDep
) -> Any:
    """Fill in the middle (la Plateforme's Codestral API): the text between `prompt` and `suffix`, in the chat
    completion's shape; 400 on a model whose vocabulary has no FIM tokens."""
    run = await runtime.chat.start_fim(body, principal)
    return await _answer(request, runtime, run, is_streamed=body.stream)


async def _answer(request: Request, runtime: Runtime, run: ChatRun, *, is_streamed: bool) -> Any:
    """Chat and FIM runs are answered alike: a chat completion, or its chunks as server-sent events."""
    return await answer(
        request,
        is_streamed=is_streamed,
        stream=lambda: runtime.chat.stream(run),
        complete=lambda: runtime.chat.complete(run),
        abandon=lambda: runtime.chat.abandon(run),
        headers=run.limit_headers,
    )
