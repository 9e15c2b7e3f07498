"""`/console/api/*`: the JSON behind the console's charts and playground, for the logged-in user.

Errors are la Plateforme's error body with its status (401 without a session, 403 without the CSRF token on
a POST, 404 for a project or key that is not the viewer's), mapped by the app's one error handler.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from galerne.errors import RequestValidationFailed
from galerne.protocol.chat import ChatCompletionRequest
from galerne.services.usage import as_csv
from galerne.web.auth import CurrentUser
from galerne.web.console_snippets import curl_command
from galerne.web.routes.console import first_problem, parse_range, viewer_of
from galerne.web.runtime import WebRuntimeDep

router = APIRouter(prefix="/console/api", include_in_schema=False)


class PlaygroundRequest(BaseModel):
    """One chat completion to run as `project`: `request` is the body `POST /v1/chat/completions` takes."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1, max_length=64)
    request: dict[str, Any]


@router.get("/projects")
async def projects(user: CurrentUser, runtime: WebRuntimeDep) -> dict[str, Any]:
    found = await run_in_threadpool(lambda: runtime.console.projects(viewer_of(user)))
    return {"data": [project.model_dump(mode="json") for project in found]}


@router.get("/keys/{key_id}")
async def key(key_id: str, user: CurrentUser, runtime: WebRuntimeDep) -> dict[str, Any]:
    """One key (never its secret); 404 when it belongs to a project that is not the viewer's."""
    row = await run_in_threadpool(lambda: runtime.console.key(viewer_of(user), key_id[:64]))
    return {**row.key.model_dump(mode="json"),
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None}


@router.get("/usage")
async def usage(
    user: CurrentUser, runtime: WebRuntimeDep, project: str, since: str = "", until: str = "", key: str | None = None
) -> dict[str, Any]:
    """Tokens and cost by day and model, top keys, refusals by reason and budgets, from the daily rollups."""
    dates = parse_range(since, until)
    return await run_in_threadpool(
        lambda: runtime.console.usage(viewer_of(user), project[:64], key_id=key and key[:64], **dates)
    )


@router.get("/usage.csv")
async def usage_csv(
    user: CurrentUser, runtime: WebRuntimeDep, project: str, since: str = "", until: str = "", key: str | None = None
) -> Response:
    """The usage by day and model as a CSV download."""
    dates = parse_range(since, until)
    report = await run_in_threadpool(
        lambda: runtime.console.usage(viewer_of(user), project[:64], key_id=key and key[:64], **dates)
    )
    filename = f"usage-{report['project']['name']}-{report['since']}-{report['until']}.csv"
    return Response(as_csv(report["by_day"]), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.post("/playground")
async def playground(body: PlaygroundRequest, request: Request, user: CurrentUser, runtime: WebRuntimeDep) -> Any:
    """Run one chat completion through the same services as the API, as the project (its limits, models and
    usage, metered as this user), and answer the raw response with the equivalent `curl`."""
    try:
        completion = ChatCompletionRequest.model_validate({**body.request, "stream": False})
    except ValidationError as exc:
        message, field = first_problem(exc)
        raise RequestValidationFailed(message, param=field) from exc
    principal = await run_in_threadpool(lambda: runtime.console.principal_for(viewer_of(user), body.project))
    run = await runtime.chat.start(completion, principal)
    try:
        reply = await runtime.chat.complete(run)
    finally:
        runtime.chat.abandon(run)  # a no-op once the reply settled it
    sent = completion.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"stream"})
    return {"response": reply.model_dump(mode="json"), "curl": curl_command(str(request.base_url).rstrip("/"), sent)}
