"""The console's pages: `/console/keys`, `/console/projects`, `/console/usage`, `/console/models`,
`/console/audit`, behind Le Chat's login.

Each page works on one project, chosen with `?project=` (name or id) among the viewer's, the first one
otherwise. Forms post back here with the session's CSRF token (checked router-wide by `mount_web`); a
refused form is shown again with the reason and the API's status. A project, key or usage the viewer may
not see is a 404 page, never a 403, so ids cannot be probed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from galerne.errors import GalerneError, InvalidRequestError, NotFoundError
from galerne.services.accounts import CreatedKey, ProjectInfo, ProjectLimitsSpec, ProjectSpec
from galerne.services.console import Viewer
from galerne.web.auth import CurrentUser, WebUser
from galerne.web.console_snippets import key_snippets
from galerne.web.runtime import WebRuntime, WebRuntimeDep
from galerne.web.templating import render

router = APIRouter(prefix="/console", include_in_schema=False)
_Spec = TypeVar("_Spec", ProjectSpec, ProjectLimitsSpec)

Text = Annotated[str, Form(max_length=4096)]
# The limit fields of the projects form, in the order shown; an empty field lifts the limit.
LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests", "monthly_token_budget",
                "monthly_budget")


def viewer_of(user: WebUser) -> Viewer:
    """Operators are the web app's administrators (`galerne users create --admin`)."""
    return Viewer(user_id=user.id, label=user.email, is_operator=user.is_admin)


@router.get("", response_class=HTMLResponse)
async def home(user: CurrentUser) -> Response:
    return RedirectResponse("/console/keys", status_code=303)


@router.get("/keys", response_class=HTMLResponse)
async def keys_page(request: Request, user: CurrentUser, runtime: WebRuntimeDep, project: str = "",
                    revoked: str = "") -> Response:
    return await _keys(request, user, runtime, project, revoked=revoked[:32])


@router.post("/keys", response_class=HTMLResponse)
async def create_key(request: Request, user: CurrentUser, runtime: WebRuntimeDep, project: Text,
                     name: Text = "") -> Response:
    """The new key's secret is in this response only: it is never stored, logged or shown again."""
    viewer = viewer_of(user)
    try:
        created = await run_in_threadpool(lambda: runtime.console.create_key(viewer, project, name=name.strip()))
    except GalerneError as exc:
        return await _keys(request, user, runtime, project, error=exc)
    return await _keys(request, user, runtime, created.project_id, created=created, status_code=201)


@router.post("/keys/{key_id}/revoke", response_class=HTMLResponse)
async def revoke_key(request: Request, key_id: str, user: CurrentUser, runtime: WebRuntimeDep) -> Response:
    viewer = viewer_of(user)
    try:
        revoked = await run_in_threadpool(lambda: runtime.console.revoke_key(viewer, key_id[:64]))
    except GalerneError as exc:
        return _error_page(request, exc)
    query = urlencode({"project": revoked.project, "revoked": revoked.id})
    return RedirectResponse(f"/console/keys?{query}", status_code=303)


@router.get("/projects", response_class=HTMLResponse)
async def projects_page(request: Request, user: CurrentUser, runtime: WebRuntimeDep, project: str = "",
                        saved: str = "") -> Response:
    return await _projects(request, user, runtime, project, saved=saved == "1")


@router.post("/projects", response_class=HTMLResponse)
async def create_project(request: Request, user: CurrentUser, runtime: WebRuntimeDep, name: Text) -> Response:
    viewer = viewer_of(user)
    try:
        spec = _validated(lambda: ProjectSpec(name=name.strip()))
        created = await run_in_threadpool(lambda: runtime.console.create_project(viewer, spec))
    except GalerneError as exc:
        return await _projects(request, user, runtime, "", error=exc)
    return RedirectResponse(f"/console/projects?{urlencode({'project': created.name})}", status_code=303)


@router.post("/projects/{name}/limits", response_class=HTMLResponse)
async def update_limits(request: Request, name: str, user: CurrentUser, runtime: WebRuntimeDep) -> Response:
    """Every field is sent: an empty one lifts its limit. Applied through the same service as the CLI."""
    viewer = viewer_of(user)
    form = await request.form()
    try:
        changes = _limits_from_form(form)
        updated = await run_in_threadpool(lambda: runtime.console.update_limits(viewer, name[:64], changes))
    except GalerneError as exc:
        return await _projects(request, user, runtime, name[:64], error=exc)
    return RedirectResponse(f"/console/projects?{urlencode({'project': updated.name, 'saved': '1'})}",
                            status_code=303)


@router.get("/usage", response_class=HTMLResponse)
async def usage_page(request: Request, user: CurrentUser, runtime: WebRuntimeDep, project: str = "",
                     since: str = "", until: str = "") -> Response:
    viewer = viewer_of(user)
    try:
        projects, current = await _choose(runtime, viewer, project)
        usage = None
        if current is not None:
            dates = parse_range(since, until)
            usage = await run_in_threadpool(lambda: runtime.console.usage(viewer, current.id, **dates))
    except GalerneError as exc:
        return _error_page(request, exc)
    return render(request, "console_usage.html", section="usage", projects=projects, project=current,
                  usage=usage)


@router.get("/models", response_class=HTMLResponse)
async def models_page(request: Request, user: CurrentUser, runtime: WebRuntimeDep, project: str = "") -> Response:
    viewer = viewer_of(user)
    try:
        projects, current = await _choose(runtime, viewer, project)
        models = await run_in_threadpool(
            lambda: runtime.console.models(viewer, current.id if current is not None else None)
        )
    except GalerneError as exc:
        return _error_page(request, exc)
    return render(request, "console_models.html", section="models", projects=projects, project=current,
                  models=models, base_url=str(request.base_url).rstrip("/"))


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request, user: CurrentUser, runtime: WebRuntimeDep, before: int | None = None
) -> Response:
    viewer = viewer_of(user)
    try:
        projects = await run_in_threadpool(lambda: runtime.console.projects(viewer))
        entries = await run_in_threadpool(lambda: runtime.console.audit(viewer, before_id=before))
        moderation = await run_in_threadpool(lambda: runtime.console.moderation(viewer))
    except GalerneError as exc:
        return _error_page(request, exc)
    return render(request, "console_audit.html", section="audit", projects=projects, project=None,
                  entries=entries, moderation=moderation)


def parse_range(since: str, until: str) -> dict[str, Any]:
    """`since`/`until` as dates (YYYY-MM-DD); empty means the default range."""
    dates: dict[str, Any] = {}
    for name, value in (("since", since), ("until", until)):
        if value:
            try:
                dates[name] = date.fromisoformat(value[:10])
            except ValueError as exc:
                raise InvalidRequestError(f"{name} must be a date like 2026-11-30", param=name) from exc
    return dates


async def _choose(runtime: WebRuntime, viewer: Viewer, wanted: str) -> tuple[list[ProjectInfo], ProjectInfo | None]:
    """The viewer's projects and the one this page shows (404 when `wanted` is not theirs)."""
    projects = await run_in_threadpool(lambda: runtime.console.projects(viewer))
    if not wanted:
        return projects, projects[0] if projects else None
    for project in projects:
        if wanted in (project.name, project.id):
            return projects, project
    raise NotFoundError(f"no project {wanted!r} among yours", param="project")


async def _keys(
    request: Request, user: WebUser, runtime: WebRuntime, wanted: str, *, created: CreatedKey | None = None,
    error: GalerneError | None = None, revoked: str = "", status_code: int = 200,
) -> Response:
    viewer = viewer_of(user)
    try:
        projects, current = await _choose(runtime, viewer, wanted)
        rows = [] if current is None else await run_in_threadpool(lambda: runtime.console.keys(viewer, current.id))
    except GalerneError as exc:
        return _error_page(request, exc)
    snippets = None
    if created is not None and current is not None:
        model = (current.allowed_models or [entry.id for entry in runtime.registry.catalog.ordered()] or [""])[0]
        snippets = key_snippets(str(request.base_url).rstrip("/"), created.key, model)
    return render(request, "console_keys.html", status_code=error.status if error else status_code,
                  section="keys", projects=projects, project=current, keys=rows, created=created,
                  snippets=snippets, error=error.message if error else None, revoked=revoked)


async def _projects(
    request: Request, user: WebUser, runtime: WebRuntime, wanted: str, *, saved: bool = False,
    error: GalerneError | None = None,
) -> Response:
    viewer = viewer_of(user)
    try:
        projects, current = await _choose(runtime, viewer, wanted)
        usage = None
        if current is not None:
            usage = await run_in_threadpool(lambda: runtime.console.usage(viewer, current.id))
    except GalerneError as exc:
        return _error_page(request, exc)
    models = [entry.id for entry in runtime.registry.catalog.ordered()]
    return render(request, "console_projects.html", status_code=error.status if error else 200,
                  section="projects", projects=projects, project=current, usage=usage, saved=saved,
                  error=error.message if error else None, models=models, limit_fields=LIMIT_FIELDS)


def _limits_from_form(form: FormData) -> ProjectLimitsSpec:
    values: dict[str, Any] = {}
    for field in LIMIT_FIELDS:
        text = str(form.get(field) or "").strip()
        try:
            values[field] = None if not text else float(text) if field == "monthly_budget" else int(text)
        except ValueError as exc:
            raise InvalidRequestError(f"{field} must be a number, or empty for no limit", param=field) from exc
    chosen = [str(name) for name in form.getlist("allowed_models")]
    values["allowed_models"] = chosen if form.get("restrict_models") == "on" else None
    values["is_disabled"] = form.get("is_disabled") == "on"
    return _validated(lambda: ProjectLimitsSpec(**values))


def _validated(build: Callable[[], _Spec]) -> _Spec:
    """A service spec from form values; pydantic's complaint as a 400 naming the field."""
    try:
        built = build()
    except ValidationError as exc:
        message, field = first_problem(exc)
        raise InvalidRequestError(message, param=field) from exc
    return built


def first_problem(error: ValidationError) -> tuple[str, str | None]:
    """pydantic's first complaint as `field: what is wrong`, and the field."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return f"{field}: {first['msg']}", field or None


def _error_page(request: Request, error: GalerneError) -> HTMLResponse:
    return render(request, "console_error.html", status_code=error.status, section="", projects=[], project=None,
                  error=error.message)
