"""The console's use cases, with who may see what: operators every project, members their own only.

A project, key or usage the viewer may not see is answered exactly as one that does not exist (404), so
ids cannot be probed. Keys, projects and limits go through `AccountService` — the same path as the CLI and
the admin API, audited alike — and a change is forgotten at once by this replica's key cache (others pick
it up within `key_cache_seconds`, as for the CLI). Usage reads the daily rollups only.

Example::

    console = ConsoleService(database, accounts, registry, authenticator)
    viewer = Viewer(user_id="a1b2", label="ada@example.org", is_operator=False)
    console.projects(viewer)                              # the projects Ada was granted
    created = console.create_key(viewer, "research", name="ci")   # created.key is shown once
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from galerne.catalog import ModelEntry
from galerne.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from galerne.protocol.models import ModelCard
from galerne.services.accounts import (
    AccountService,
    CreatedKey,
    KeyInfo,
    ProjectInfo,
    ProjectLimitsSpec,
    ProjectSpec,
    key_info,
    project_info,
)
from galerne.services.audit import Actor, AuditEntry, AuditLog
from galerne.services.auth import Authenticator, Principal, project_principal
from galerne.services.models import ModelRegistry
from galerne.services.moderation.audit import ModerationAudit, ModerationEventInfo
from galerne.storage import console as store
from galerne.storage import tenancy
from galerne.storage.database import Database
from galerne.storage.tables import MICROS_PER_UNIT, Project
from galerne.storage.usage import UsageFilter, UsageGrouping, aggregate_usage, monthly_totals

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30
NUM_TOP_KEYS = 10


@dataclass(frozen=True, slots=True)
class Viewer:
    """The logged-in web user looking at the console."""

    user_id: str
    label: str  # their e-mail, as the audit trail names them
    is_operator: bool

    @property
    def actor(self) -> Actor:
        return Actor(self.label, user_id=self.user_id)


@dataclass(frozen=True, slots=True)
class KeyRow:
    key: KeyInfo
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class ModelStatus:
    card: ModelCard
    engine: str
    is_healthy: bool
    num_in_flight: int  # generating or waiting for a slot
    num_slots: int


class ConsoleService:
    def __init__(
        self,
        database: Database,
        accounts: AccountService,
        registry: ModelRegistry,
        authenticator: Authenticator | None,
        clock: Callable[[], datetime] | None = None,
        moderation: ModerationAudit | None = None,
    ) -> None:
        self._database = database
        self._accounts = accounts
        self._registry = registry
        self._authenticator = authenticator
        self._audit = AuditLog(database)
        self._moderation = moderation or ModerationAudit(database)
        self._now = clock or (lambda: datetime.now(UTC))

    # Projects and limits

    def projects(self, viewer: Viewer) -> list[ProjectInfo]:
        if viewer.is_operator:
            return self._accounts.list_projects()
        with self._database.session() as session:
            return [project_info(project) for project in store.member_projects(session, viewer.user_id)]

    def project(self, viewer: Viewer, name_or_id: str) -> ProjectInfo:
        with self._database.session() as session:
            return project_info(self._visible_project(session, viewer, name_or_id))

    def create_project(self, viewer: Viewer, spec: ProjectSpec) -> ProjectInfo:
        _operators_only(viewer, "create projects")
        return self._accounts.create_project(spec, actor=viewer.actor)

    def update_limits(self, viewer: Viewer, name_or_id: str, changes: ProjectLimitsSpec) -> ProjectInfo:
        """Operators only: a member raising their own limits would make them no limits at all."""
        project = self.project(viewer, name_or_id)
        _operators_only(viewer, "change a project's limits")
        updated = self._accounts.update_project(project.name, changes, actor=viewer.actor)
        if self._authenticator is not None:
            self._authenticator.forget()  # the new limits apply at once on this replica
        return updated

    def principal_for(self, viewer: Viewer, name_or_id: str) -> Principal:
        """The playground's caller: the project's limits, budgets and models, metered as `user:<id>`."""
        with self._database.session() as session:
            project = self._visible_project(session, viewer, name_or_id)
            if project.is_disabled:
                raise PermissionDeniedError(f"project {project.name!r} is disabled")
            return project_principal(project, user_id=viewer.user_id)

    # Keys

    def keys(self, viewer: Viewer, name_or_id: str) -> list[KeyRow]:
        with self._database.session() as session:
            project = self._visible_project(session, viewer, name_or_id)
            return [
                KeyRow(key_info(key), last_used)
                for key, last_used in store.keys_with_last_use(session, project.id)
            ]

    def key(self, viewer: Viewer, key_id: str) -> KeyRow:
        """One key, 404 when it is not in one of the viewer's projects."""
        with self._database.session() as session:
            found = tenancy.find_key(session, key_id)
            if found is None or not self._may_see(session, viewer, found.project_id):
                raise _no_key(key_id)
            rows = [row for row in store.keys_with_last_use(session, found.project_id) if row[0].id == key_id]
            return KeyRow(key_info(found), rows[0][1] if rows else None)

    def create_key(self, viewer: Viewer, name_or_id: str, *, name: str) -> CreatedKey:
        project = self.project(viewer, name_or_id)
        return self._accounts.create_key(project.name, name=name, actor=viewer.actor)

    def revoke_key(self, viewer: Viewer, key_id: str) -> KeyInfo:
        self.key(viewer, key_id)  # 404 for another project's key
        revoked = self._accounts.revoke_key(key_id, actor=viewer.actor)
        if self._authenticator is not None:
            self._authenticator.forget(key_id)
        return revoked

    # Usage

    def usage(
        self, viewer: Viewer, name_or_id: str, *, since: date | None = None, until: date | None = None,
        key_id: str | None = None,
    ) -> dict[str, Any]:
        """Tokens and cost by day and model, the top keys, refusals by reason and this month against the
        budgets, for one project over [since, until] (the last 30 days by default): a few rollup queries."""
        until = until or self._now().date()
        since = since or until - timedelta(days=DEFAULT_RANGE_DAYS - 1)
        if since > until or (until - since).days >= MAX_RANGE_DAYS:
            raise InvalidRequestError(
                f"choose a range of 1 to {MAX_RANGE_DAYS} days with `since` on or before `until`", param="since"
            )
        with self._database.session() as session:
            project = self._visible_project(session, viewer, name_or_id)
            if key_id is not None:
                key = tenancy.find_key(session, key_id)
                if key is None or key.project_id != project.id:
                    raise _no_key(key_id)
            where = UsageFilter(project_id=project.id, key_id=key_id, since=since, until=until)
            by_day = aggregate_usage(session, [UsageGrouping.DAY, UsageGrouping.MODEL], where)
            by_key = aggregate_usage(session, [UsageGrouping.KEY], where)
            refusals = store.refusals_by_reason(session, project.id, since, until)
            month_tokens, month_cost = monthly_totals(session, project.id, self._now().date().replace(day=1))
            info = project_info(project)
        for row in [*by_day, *by_key]:
            _with_totals(row)
        for row in by_day:
            row["day"] = row["day"].isoformat()
        top_keys = sorted(by_key, key=lambda row: (-row["total_tokens"], row["key_id"]))[:NUM_TOP_KEYS]
        return {
            "project": {"id": info.id, "name": info.name},
            "since": since.isoformat(),
            "until": until.isoformat(),
            "days": [(since + timedelta(days=offset)).isoformat() for offset in range((until - since).days + 1)],
            "by_day": by_day,
            "by_model": _by_model(by_day),
            "top_keys": top_keys,
            "refusals": refusals,
            "totals": _sum_rows(by_day),
            "budget": {
                "month": self._now().date().replace(day=1).isoformat(),
                "tokens": month_tokens,
                "token_budget": info.monthly_token_budget,
                "cost": month_cost / MICROS_PER_UNIT,
                "money_budget": info.monthly_budget,
            },
        }

    # Audit and models

    def audit(self, viewer: Viewer, *, before_id: int | None = None, limit: int = 200) -> list[AuditEntry]:
        _operators_only(viewer, "read the audit trail")
        return self._audit.recent(limit=limit, before_id=before_id)

    def moderation(self, viewer: Viewer, *, limit: int = 100) -> list[ModerationEventInfo]:
        """What moderation policies did, newest first (docs/moderation.md); operators only, as the audit."""
        _operators_only(viewer, "read the moderation log")
        return self._moderation.events(limit=limit)

    def models(self, viewer: Viewer, name_or_id: str | None = None) -> list[ModelStatus]:
        """The catalogue as cards with live engine state; with a project, only the models it may use."""
        allowed = None if name_or_id is None else self.project(viewer, name_or_id).allowed_models
        return [self._status(entry) for entry in self._registry.catalog.ordered()
                if allowed is None or entry.id in allowed]

    def _status(self, entry: ModelEntry) -> ModelStatus:
        stats = self._registry.engine_for(entry).stats()
        return ModelStatus(card=self._registry.card(entry), engine=entry.engine, is_healthy=stats.is_healthy,
                           num_in_flight=stats.num_active + stats.num_queued, num_slots=stats.num_slots)

    # Access

    def _visible_project(self, session: Session, viewer: Viewer, name_or_id: str) -> Project:
        project = tenancy.find_project(session, name_or_id)
        if project is None or not self._may_see(session, viewer, project.id):
            raise NotFoundError(f"no project {name_or_id!r} among yours", param="project")
        return project

    @staticmethod
    def _may_see(session: Session, viewer: Viewer, project_id: str) -> bool:
        return viewer.is_operator or store.is_member(session, viewer.user_id, project_id)


def _operators_only(viewer: Viewer, what: str) -> None:
    if not viewer.is_operator:
        raise PermissionDeniedError(f"only operators may {what}; ask one", code="operators_only")


def _no_key(key_id: str) -> NotFoundError:
    return NotFoundError(f"no API key {key_id!r} among your projects' keys", param="key")


def _with_totals(row: dict[str, Any]) -> None:
    row["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
    row["cost"] = row.pop("cost_micros") / MICROS_PER_UNIT


def _sum_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    names = ("num_requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost")
    return {name: sum(row[name] for row in rows) for name in names}


def _by_model(by_day: list[dict[str, Any]]) -> list[dict[str, Any]]:
    models: dict[str, list[dict[str, Any]]] = {}
    for row in by_day:
        models.setdefault(row["model"], []).append(row)
    return sorted(({"model": model, **_sum_rows(rows)} for model, rows in models.items()),
                  key=lambda row: -row["total_tokens"])
