"""Writing and reading the moderation audit trail (`moderation_events`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from galerne.storage.moderation_tables import ModerationEvent


@dataclass(frozen=True, slots=True)
class ModerationFilter:
    project_id: str | None = None
    since: datetime | None = None
    action: str | None = None
    category: str | None = None


def add_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert audit rows (dicts of `ModerationEvent` columns) in one statement."""
    if rows:
        session.execute(insert(cast(Table, ModerationEvent.__table__)), list(rows))


def list_events(session: Session, where: ModerationFilter, *, limit: int) -> list[ModerationEvent]:
    """The newest events first."""
    query = select(ModerationEvent).order_by(ModerationEvent.created_at.desc(), ModerationEvent.id.desc())
    if where.project_id is not None:
        query = query.where(ModerationEvent.project_id == where.project_id)
    if where.since is not None:
        query = query.where(ModerationEvent.created_at >= where.since)
    if where.action is not None:
        query = query.where(ModerationEvent.action == where.action)
    if where.category is not None:
        query = query.where(ModerationEvent.category == where.category)
    return list(session.scalars(query.limit(limit)))
