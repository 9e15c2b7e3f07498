"""`/admin/*`: projects, keys and usage for admin keys — the same operations as the CLI.

Example::

    curl -H "Authorization: Bearer $ADMIN_KEY" localhost:8000/admin/usage?group_by=project,model
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, status
from fastapi.responses import PlainTextResponse

from galerne.api.deps import AdminDep, RuntimeDep
from galerne.api.errors import error_responses
from galerne.moderation_categories import Category
from galerne.protocol.admin import PRINTABLE, KeyCreateRequest, UsageReport
from galerne.services.accounts import CreatedKey, KeyInfo, ProjectInfo, ProjectLimitsSpec, ProjectSpec
from galerne.services.audit import Actor
from galerne.services.auth import Principal
from galerne.services.moderation.audit import ModerationEventInfo
from galerne.services.usage import as_csv

router = APIRouter(prefix="/admin", responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503))
_CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}
# Names and ids from the URL are looked up in the database, which cannot compare text holding NUL.
NameInPath = Annotated[str, Path(pattern=PRINTABLE)]
NameInQuery = Annotated[str | None, Query(pattern=PRINTABLE)]


def _actor(admin: Principal) -> Actor:
    """How the audit trail names a change made through this API."""
    return Actor(f"admin key {admin.key_id}")


@router.get("/projects", response_model=list[ProjectInfo])
def list_projects(_: AdminDep, runtime: RuntimeDep) -> list[ProjectInfo]:
    return runtime.accounts.list_projects()


@router.post("/projects", response_model=ProjectInfo, status_code=status.HTTP_201_CREATED)
def create_project(spec: ProjectSpec, admin: AdminDep, runtime: RuntimeDep) -> ProjectInfo:
    return runtime.accounts.create_project(spec, actor=_actor(admin))


@router.get("/projects/{name}", response_model=ProjectInfo)
def get_project(name: NameInPath, _: AdminDep, runtime: RuntimeDep) -> ProjectInfo:
    return runtime.accounts.get_project(name)


@router.patch("/projects/{name}", response_model=ProjectInfo)
def update_project(name: NameInPath, changes: ProjectLimitsSpec, admin: AdminDep, runtime: RuntimeDep) -> ProjectInfo:
    project = runtime.accounts.update_project(name, changes, actor=_actor(admin))
    if runtime.authenticator is not None:
        runtime.authenticator.forget()  # limits and allowed models apply at once on this replica
    return project


@router.get("/keys", response_model=list[KeyInfo])
def list_keys(_: AdminDep, runtime: RuntimeDep, project: NameInQuery = None) -> list[KeyInfo]:
    return runtime.accounts.list_keys(project)


@router.post("/keys", response_model=CreatedKey, status_code=status.HTTP_201_CREATED)
def create_key(body: KeyCreateRequest, admin: AdminDep, runtime: RuntimeDep) -> CreatedKey:
    return runtime.accounts.create_key(
        body.project, name=body.name, is_admin=body.is_admin, expires_at=body.expires_at, actor=_actor(admin)
    )


@router.delete("/keys/{key_id}", response_model=KeyInfo)
def revoke_key(key_id: NameInPath, admin: AdminDep, runtime: RuntimeDep) -> KeyInfo:
    key = runtime.accounts.revoke_key(key_id, actor=_actor(admin))
    if runtime.authenticator is not None:
        runtime.authenticator.forget(key_id)
    return key


@router.get("/usage", response_model=UsageReport, responses=_CSV)
def usage(
    _: AdminDep,
    runtime: RuntimeDep,
    group_by: Annotated[str, Query(description="Comma-separated: project, key, model, day.")] = "project,model",
    project: NameInQuery = None,
    key: NameInQuery = None,
    model: NameInQuery = None,
    since: date | None = None,
    until: date | None = None,
    format: Literal["json", "csv"] = "json",
) -> UsageReport | PlainTextResponse:
    groups = [name.strip() for name in group_by.split(",") if name.strip()]
    rows = runtime.usage.aggregate(groups, project=project, key_id=key, model=model, since=since, until=until)
    if format == "csv":
        return PlainTextResponse(as_csv(rows), media_type="text/csv")
    return UsageReport(group_by=groups, data=rows)


@router.get("/moderation", response_model=list[ModerationEventInfo])
def moderation_log(
    _: AdminDep,
    runtime: RuntimeDep,
    project: NameInQuery = None,
    since: datetime | None = None,
    action: Literal["block", "flag", "refuse", "mask"] | None = None,
    category: Category | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[ModerationEventInfo]:
    """What moderation policies did (block, flag, refuse, mask), newest first; the text only where a policy
    keeps it."""
    return runtime.moderation_audit.events(
        project=project, since=since, action=action, category=None if category is None else category.value, limit=limit
    )
