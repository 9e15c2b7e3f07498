"""Projects and their keys, as the operator manages them from the CLI and the admin API.

A project is what is limited and billed; a key belongs to one project. Admin keys manage the
others and read all usage; without `--project` they go into a project named `admin`.

No change may take away the last working admin key (disabling or expiring its project, revoking it):
the admin API could not undo it. Such a change is refused (409 `would_lock_out_admins`); the CLI, which
works on the database directly, is the way back when keys lapse on their own (docs/tenancy.md).

Example::

    accounts = AccountService(database, catalog)
    accounts.create_project(ProjectSpec(name="research", requests_per_minute=60))
    created = accounts.create_key("research")       # created.key is shown once, never stored
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from galerne.catalog import Catalog
from galerne.errors import ConflictError, InvalidRequestError, NotFoundError
from galerne.protocol.admin import ProjectName
from galerne.protocol.base import MAX_EXACT_FLOAT_INT, MAX_INT32, MAX_INT64, RequestBody, UtcDateTime
from galerne.services import audit
from galerne.services.audit import CLI, Actor
from galerne.services.keys import issue_key
from galerne.storage import tenancy
from galerne.storage.database import Database
from galerne.storage.tables import MICROS_PER_UNIT, ApiKey, Project

ADMIN_PROJECT = "admin"


class ProjectLimitsSpec(RequestBody):
    """What can be set on a project; every field may be left unset (unlimited, never expires).

    Each bound is what its column (INTEGER, BIGINT) or the Redis limiter (exact integers in doubles)
    can hold; the money budget is stored in BIGINT millionths.
    """

    allowed_models: list[str] | None = Field(default=None, description="Model ids; null allows every model.")
    requests_per_minute: int | None = Field(default=None, ge=1, le=MAX_INT32)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=MAX_EXACT_FLOAT_INT)
    max_concurrent_requests: int | None = Field(default=None, ge=1, le=MAX_INT32)
    monthly_token_budget: int | None = Field(default=None, ge=0, le=MAX_INT64)
    monthly_budget: float | None = Field(
        default=None, ge=0, le=MAX_INT64 // MICROS_PER_UNIT, description="In the catalogue's price currency."
    )
    expires_at: UtcDateTime | None = None
    is_disabled: bool = False
    policy: str | None = Field(default=None, description="A moderation policy of the catalogue for every request.")


class ProjectSpec(ProjectLimitsSpec):
    name: ProjectName


class ProjectInfo(ProjectSpec):
    id: str
    created_at: datetime


class KeyInfo(BaseModel):
    id: str
    name: str
    project: str
    project_id: str
    is_admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class CreatedKey(KeyInfo):
    key: str = Field(description="The whole key; shown this once and never again.")


class AccountService:
    def __init__(self, database: Database, catalog: Catalog, clock: Callable[[], datetime] | None = None) -> None:
        self._database = database
        self._catalog = catalog
        self._now = clock or (lambda: datetime.now(UTC))

    def create_project(self, spec: ProjectSpec, *, actor: Actor = CLI) -> ProjectInfo:
        self._check_models(spec.allowed_models)
        self._check_policy(spec.policy)
        with self._database.session() as session:
            if tenancy.find_project(session, spec.name) is not None:
                raise ConflictError(f"project {spec.name!r} already exists; use `projects update`", param="name")
            project = Project(id=secrets.token_hex(8), created_at=self._now(), name=spec.name)
            _apply(project, spec, spec.model_fields_set | {"is_disabled"})
            created = project_info(tenancy.add_project(session, project))
            limits = created.model_dump(mode="json", include=spec.model_fields_set - {"name"})
            audit.record(session, actor, "project.create", now=self._now(), project_id=project.id,
                         target=project.name, details=limits)
            return created

    def update_project(self, name: str, changes: ProjectLimitsSpec, *, actor: Actor = CLI) -> ProjectInfo:
        """Set only the fields given (`model_fields_set`); an explicit null lifts a limit."""
        self._check_models(changes.allowed_models)
        self._check_policy(changes.policy)
        with self._database.session() as session:
            project = project_or_404(session, name)
            before = project_info(project).model_dump(mode="json")
            had_admin_key = tenancy.has_admin_key(session, self._now())
            _apply(project, changes, changes.model_fields_set)
            session.flush()
            self._keep_an_admin_key(session, had_admin_key, f"this change to project {project.name!r}")
            updated = project_info(project)
            after = updated.model_dump(mode="json")
            changed = {field: [before[field], after[field]] for field in after if before[field] != after[field]}
            if changed:
                audit.record(session, actor, "project.update", now=self._now(), project_id=project.id,
                             target=project.name, details=changed)
            return updated

    def list_projects(self) -> list[ProjectInfo]:
        with self._database.session() as session:
            return [project_info(project) for project in tenancy.list_projects(session)]

    def get_project(self, name: str) -> ProjectInfo:
        with self._database.session() as session:
            return project_info(project_or_404(session, name))

    def create_key(
        self, project: str | None, *, name: str = "", is_admin: bool = False, expires_at: datetime | None = None,
        actor: Actor = CLI,
    ) -> CreatedKey:
        with self._database.session() as session:
            if project is None:
                if not is_admin:
                    raise InvalidRequestError("say which project the key is for (--project NAME)", param="project")
                owner = tenancy.find_project(session, ADMIN_PROJECT) or tenancy.add_project(
                    session, Project(id=secrets.token_hex(8), name=ADMIN_PROJECT, created_at=self._now())
                )
            else:
                owner = project_or_404(session, project)
            if is_admin:
                self._check_usable(owner)
            issued = issue_key()
            key = ApiKey(
                id=issued.id, project=owner, name=name, secret_hash=issued.secret_hash, is_admin=is_admin,
                created_at=self._now(), expires_at=expires_at,
            )
            tenancy.add_key(session, key)
            audit.record(session, actor, "key.create", now=self._now(), project_id=owner.id, target=key.id,
                         details={"name": name, "project": owner.name, "is_admin": is_admin})
            return CreatedKey(key=issued.token, **key_info(key).model_dump())

    def list_keys(self, project: str | None = None) -> list[KeyInfo]:
        with self._database.session() as session:
            project_id = project_or_404(session, project).id if project is not None else None
            return [key_info(key) for key in tenancy.list_keys(session, project_id)]

    def revoke_key(self, key_id: str, *, actor: Actor = CLI) -> KeyInfo:
        """Revoked keys stay listed (usage refers to them) but never authenticate again."""
        with self._database.session() as session:
            key = tenancy.find_key(session, key_id)
            if key is None:
                raise NotFoundError(f"no API key with id {key_id!r}; `galerne keys list` shows them", param="id")
            if key.revoked_at is None:
                had_admin_key = tenancy.has_admin_key(session, self._now())
                key.revoked_at = self._now()
                session.flush()
                self._keep_an_admin_key(session, had_admin_key, f"revoking key {key_id!r}")
                audit.record(session, actor, "key.revoke", now=self._now(), project_id=key.project_id, target=key.id,
                             details={"name": key.name, "project": key.project.name})
            return key_info(key)

    def has_admin_key(self) -> bool:
        with self._database.session() as session:
            return tenancy.has_admin_key(session, self._now())

    def _keep_an_admin_key(self, session: Session, had_admin_key: bool, change: str) -> None:
        """Refuse (and so roll back) a change that took away the last working admin key.

        A platform already without one may change anything: that is how the CLI brings one back.
        """
        if had_admin_key and not tenancy.has_admin_key(session, self._now()):
            raise ConflictError(
                f"refused: after {change} no admin key would work, and nobody could use the admin API to undo it; "
                "first create an admin key in another project (`galerne keys create --admin --project NAME`, or "
                'POST /admin/keys {"project": NAME, "is_admin": true})',
                code="would_lock_out_admins",
            )

    def _check_usable(self, project: Project) -> None:
        """An admin key in a disabled or expired project would be born unusable: say how to fix the project."""
        if project.is_disabled or (project.expires_at is not None and project.expires_at <= self._now()):
            state = "disabled" if project.is_disabled else "expired"
            raise InvalidRequestError(
                f"project {project.name!r} is {state}, so an admin key in it would not work; first run "
                f"`galerne projects update {project.name} --enable --unset expires`",
                param="project",
                code="project_unusable",
            )

    def _check_policy(self, policy: str | None) -> None:
        """A project can only be put under a policy the catalogue defines (400 naming those that exist)."""
        if policy is not None:
            self._catalog.policy(policy)

    def _check_models(self, models: list[str] | None) -> None:
        """Allowed models are stored as catalogue ids, so an alias or a typo is caught now."""
        if models is None:
            return
        for index, name in enumerate(models):
            models[index] = self._catalog.resolve(name).id


def _apply(project: Project, spec: ProjectLimitsSpec, fields: set[str]) -> None:
    for field in fields:
        if field == "name":
            continue
        value = getattr(spec, field)
        if field == "monthly_budget":
            project.monthly_budget_micros = None if value is None else round(value * MICROS_PER_UNIT)
        else:
            setattr(project, field, value)


def project_or_404(session: Session, name: str) -> Project:
    """A project by name or id; a 404 naming the command that lists them otherwise (reports and logs use it too)."""
    project = tenancy.find_project(session, name)
    if project is None:
        raise NotFoundError(f"no project named {name!r}; `galerne projects list` shows them", param="project")
    return project


def project_info(project: Project) -> ProjectInfo:
    budget = project.monthly_budget_micros
    return ProjectInfo(
        id=project.id,
        name=project.name,
        created_at=project.created_at,
        allowed_models=project.allowed_models,
        requests_per_minute=project.requests_per_minute,
        tokens_per_minute=project.tokens_per_minute,
        max_concurrent_requests=project.max_concurrent_requests,
        monthly_token_budget=project.monthly_token_budget,
        monthly_budget=None if budget is None else budget / MICROS_PER_UNIT,
        expires_at=project.expires_at,
        is_disabled=project.is_disabled,
        policy=project.policy,
    )


def key_info(key: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=key.id, name=key.name, project=key.project.name, project_id=key.project_id, is_admin=key.is_admin,
        created_at=key.created_at, expires_at=key.expires_at, revoked_at=key.revoked_at,
    )
