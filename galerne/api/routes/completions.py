"""`POST /v1/completions`: OpenAI's legacy text completion, with `echo` and `logprobs` for scoring prompts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from galerne.api.answering import answer
from galerne.api.deps import PrincipalDep, RuntimeDep
from galerne.api.errors import error_responses
from galerne.api.sse import event_stream_content
from galerne.protocol.completions import CompletionRequest, CompletionResponse

router = APIRouter(responses=error_responses(400, 401, 404, 413, 422, 429, 500, 503))


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    response_model_exclude_none=False,
    responses={200: {"content": event_stream_content(CompletionResponse)}},  # with `stream: true`
)
async def completions(body: CompletionRequest, request: Request, principal: PrincipalDep, runtime: RuntimeDep) -> Any:
    """Continue a text prompt (no chat template) on an embedded model; `echo` with `logprobs` and
    `max_tokens: 0` scores the prompt itself."""
    run = await runtime.completions.start(body, principal)
    return await answer(
        request,
        is_streamed=body.stream,
        stream=lambda: runtime.completions.stream(run),
        complete=lambda: runtime.completions.complete(run),
        abandon=lambda: runtime.completions.abandon(run),
        headers=run.limit_headers,
    )
