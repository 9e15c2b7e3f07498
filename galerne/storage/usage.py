"""Usage rows and their daily rollups, written in one transaction, and the aggregate queries over them.

Reports and budget checks read `usage_daily` only, so they cost the same at a thousand requests or at
millions; the per-request rows stay for audits and exports. A batch replayed from a local journal segment
carries the segment's offset, stored in the same transaction (`usage_journal_checkpoints`), so the rows,
their rollups and "how far this segment is billed" commit or fail together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from galerne.storage.tables import ApiKey, Project, UsageDaily, UsageJournalCheckpoint, UsageRecord

_ROLLUP_SUMS = ("num_requests", "num_cancelled", "num_errors", "prompt_tokens", "completion_tokens", "cost_micros")


class UsageGrouping(StrEnum):
    PROJECT = "project"
    KEY = "key"
    MODEL = "model"
    DAY = "day"


@dataclass(frozen=True, slots=True)
class UsageFilter:
    project_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    since: date | None = None
    until: date | None = None  # inclusive


def add_usage(session: Session, records: Sequence[dict[str, Any]]) -> None:
    """Insert request rows (dicts of `UsageRecord` columns) and add them into the daily rollups."""
    if not records:
        return
    # A Core executemany on the table, not the ORM's bulk path: the driver inserts the batch in one call.
    session.execute(insert(cast(Table, UsageRecord.__table__)), list(records))
    session.execute(_upsert_rollup(session), _rollups(records))


def journal_offset(session: Session, journal_id: str) -> int:
    """How many bytes of journal segment `journal_id` are already in this database (0 when none)."""
    offset = session.scalar(
        select(UsageJournalCheckpoint.committed_offset).where(UsageJournalCheckpoint.journal_id == journal_id)
    )
    return int(offset or 0)


def save_journal_offset(session: Session, journal_id: str, offset: int) -> None:
    """Record that segment `journal_id` is in this database up to `offset`; call it in the session that
    adds those rows, so both commit together."""
    statement = dialect_insert(session, UsageJournalCheckpoint)
    values = {"journal_id": journal_id, "committed_offset": offset, "updated_at": datetime.now(UTC)}
    session.execute(
        statement.values(values).on_conflict_do_update(
            index_elements=["journal_id"],
            set_={"committed_offset": offset, "updated_at": values["updated_at"]},
        )
    )


def forget_journal(session: Session, journal_id: str) -> None:
    """Drop the checkpoint of a segment that was removed from disk (ids are never reused)."""
    session.execute(delete(UsageJournalCheckpoint).where(UsageJournalCheckpoint.journal_id == journal_id))


def monthly_totals(session: Session, project_id: str, first_day: date) -> tuple[int, int]:
    """(tokens, cost in micros) a project used since `first_day`, from the rollups."""
    query = select(
        func.coalesce(func.sum(UsageDaily.prompt_tokens + UsageDaily.completion_tokens), 0),
        func.coalesce(func.sum(UsageDaily.cost_micros), 0),
    ).where(UsageDaily.project_id == project_id, UsageDaily.day >= first_day)
    tokens, cost = session.execute(query).one()
    return int(tokens), int(cost)


def aggregate_usage(
    session: Session, group_by: Iterable[UsageGrouping], where: UsageFilter
) -> list[dict[str, Any]]:
    """Sums over the rollups, grouped as asked, with project names alongside ids."""
    dimensions: list[ColumnElement[Any]] = []
    for grouping in group_by:
        if grouping is UsageGrouping.PROJECT:
            dimensions += [UsageDaily.project_id.label("project_id"), Project.name.label("project")]
        elif grouping is UsageGrouping.KEY:
            dimensions += [UsageDaily.key_id.label("key_id"), ApiKey.name.label("key_name")]
        elif grouping is UsageGrouping.MODEL:
            dimensions.append(UsageDaily.model.label("model"))
        else:
            dimensions.append(UsageDaily.day.label("day"))
    sums = [func.coalesce(func.sum(getattr(UsageDaily, name)), 0).label(name) for name in _ROLLUP_SUMS]
    query = (
        select(*dimensions, *sums)
        .select_from(UsageDaily)
        .outerjoin(Project, Project.id == UsageDaily.project_id)
        .outerjoin(ApiKey, ApiKey.id == UsageDaily.key_id)
    )
    for condition in _conditions(where):
        query = query.where(condition)
    if dimensions:
        query = query.group_by(*dimensions).order_by(*dimensions)
    rows = [dict(row._mapping) for row in session.execute(query)]
    for row in rows:  # PostgreSQL sums BIGINTs as NUMERIC
        for name in _ROLLUP_SUMS:
            row[name] = int(row[name])
    return rows


def list_usage_records(session: Session, where: UsageFilter, *, limit: int = 1000) -> Sequence[UsageRecord]:
    """The newest request rows matching the filter (for audits)."""
    query = select(UsageRecord).order_by(UsageRecord.id.desc()).limit(limit)
    if where.project_id is not None:
        query = query.where(UsageRecord.project_id == where.project_id)
    if where.key_id is not None:
        query = query.where(UsageRecord.key_id == where.key_id)
    if where.model is not None:
        query = query.where(UsageRecord.model == where.model)
    return session.scalars(query).all()


def _conditions(where: UsageFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.project_id is not None:
        conditions.append(UsageDaily.project_id == where.project_id)
    if where.key_id is not None:
        conditions.append(UsageDaily.key_id == where.key_id)
    if where.model is not None:
        conditions.append(UsageDaily.model == where.model)
    if where.since is not None:
        conditions.append(UsageDaily.day >= where.since)
    if where.until is not None:
        conditions.append(UsageDaily.day <= where.until)
    return conditions


def _rollups(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sum a batch per (day, project, key, model) so each rollup row is touched once per flush."""
    groups: dict[tuple[date, str, str, str], dict[str, Any]] = {}
    for record in records:
        day = record["created_at"].date()
        group_key = (day, record["project_id"] or "", record["key_id"] or "", record["model"])
        row = groups.get(group_key)
        if row is None:
            row = groups[group_key] = {
                "day": day, "project_id": group_key[1], "key_id": group_key[2], "model": group_key[3],
                **dict.fromkeys(_ROLLUP_SUMS, 0),
            }
        row["num_requests"] += 1
        row["num_cancelled"] += record["status"] == "cancelled"
        row["num_errors"] += record["status"] == "error"
        row["prompt_tokens"] += record["prompt_tokens"]
        row["completion_tokens"] += record["completion_tokens"]
        row["cost_micros"] += record["cost_micros"]
    return list(groups.values())


def _upsert_rollup(session: Session) -> Any:
    """INSERT … ON CONFLICT DO UPDATE adding a batch's sums, run once per rollup row of the batch
    (an executemany); both SQLite and PostgreSQL have it."""
    statement = dialect_insert(session, UsageDaily)
    table = UsageDaily.__table__
    return statement.on_conflict_do_update(
        index_elements=["day", "project_id", "key_id", "model"],
        set_={name: table.c[name] + statement.excluded[name] for name in _ROLLUP_SUMS},
    )


def dialect_insert(session: Session, table: Any) -> Any:
    """The INSERT that knows ON CONFLICT on this backend."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"usage metering needs SQLite or PostgreSQL, not {dialect}")
