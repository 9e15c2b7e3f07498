"""Rows behind the console: project members, audit events, refusal counts and when keys were last used.

Functions take a `Session` so the caller decides the transaction (an audit event commits with its change).
Every query here reads an index: members by user, audit events by time, refusals by (project, day), and a
key's last use by `ix_usage_records_key_created` (one index probe per key, whatever the history).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from galerne.storage.console_tables import AuditEvent, ProjectMember, RefusalDaily
from galerne.storage.tables import ApiKey, Project, UsageRecord, UTCDateTime
from galerne.storage.usage import dialect_insert


def add_member(session: Session, user_id: str, project_id: str, now: datetime) -> bool:
    """Give a user access to a project; False when they already had it."""
    if session.get(ProjectMember, (user_id, project_id)) is not None:
        return False
    session.add(ProjectMember(user_id=user_id, project_id=project_id, created_at=now))
    session.flush()
    return True


def remove_member(session: Session, user_id: str, project_id: str) -> bool:
    member = session.get(ProjectMember, (user_id, project_id))
    if member is None:
        return False
    session.delete(member)
    return True


def member_projects(session: Session, user_id: str) -> Sequence[Project]:
    """The projects a user is a member of, by name."""
    query = (
        select(Project).join(ProjectMember, ProjectMember.project_id == Project.id)
        .where(ProjectMember.user_id == user_id).order_by(Project.name)
    )
    return session.scalars(query).all()


def add_audit(session: Session, event: AuditEvent) -> None:
    session.add(event)
    session.flush()


def list_audit(session: Session, *, limit: int = 200, before_id: int | None = None) -> Sequence[AuditEvent]:
    """The newest events first (`before_id` pages further back)."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return session.scalars(query).all()


def add_refusals(session: Session, counts: Iterable[dict[str, Any]]) -> None:
    """Add counts (dicts of `RefusalDaily` columns) into the daily rows, in one executemany upsert."""
    rows = list(counts)
    if not rows:
        return
    statement = dialect_insert(session, RefusalDaily)
    statement = statement.on_conflict_do_update(
        index_elements=["day", "project_id", "key_id", "reason"],
        set_={"num_refused": RefusalDaily.__table__.c.num_refused + statement.excluded.num_refused},
    )
    session.execute(statement, rows)


def refusals_by_reason(session: Session, project_id: str, since: date, until: date) -> dict[str, int]:
    query = (
        select(RefusalDaily.reason, func.sum(RefusalDaily.num_refused))
        .where(RefusalDaily.project_id == project_id, RefusalDaily.day >= since, RefusalDaily.day <= until)
        .group_by(RefusalDaily.reason).order_by(RefusalDaily.reason)
    )
    return {reason: int(count) for reason, count in session.execute(query)}


def keys_with_last_use(session: Session, project_id: str) -> list[tuple[ApiKey, datetime | None]]:
    """A project's keys, oldest first, each with its newest usage record's time (None: never used)."""
    last_used = (
        select(func.max(UsageRecord.created_at)).where(UsageRecord.key_id == ApiKey.id).scalar_subquery()
    )
    query = (
        select(ApiKey, last_used).options(joinedload(ApiKey.project))
        .where(ApiKey.project_id == project_id).order_by(ApiKey.created_at)
    )
    return [(key, _aware(moment)) for key, moment in session.execute(query)]


def _aware(moment: Any) -> datetime | None:
    """The subquery's value skips the column type on SQLite (a naive datetime, or a string)."""
    if moment is None:
        return None
    parsed = moment if isinstance(moment, datetime) else datetime.fromisoformat(str(moment))
    return UTCDateTime().process_result_value(parsed, None)  # type: ignore[arg-type]


def is_member(session: Session, user_id: str, project_id: str) -> bool:
    return session.get(ProjectMember, (user_id, project_id)) is not None
