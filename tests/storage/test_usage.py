"""Usage rows and daily rollups: written together, summed exactly, grouped as asked (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import func, select

from galerne.storage.database import Database
from galerne.storage.tables import UsageDaily, UsageRecord
from galerne.storage.usage import (
    UsageFilter,
    UsageGrouping,
    add_usage,
    aggregate_usage,
    list_usage_records,
    monthly_totals,
)


def row(day: int, project: str | None, key: str | None, model: str, prompt: int, completion: int, **extra: object):
    return {
        "created_at": datetime(2026, 11, day, 12, 0, tzinfo=UTC),
        "project_id": project,
        "key_id": key,
        "model": model,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_micros": prompt * 1 + completion * 3,
        "ttft_ms": 12,
        "duration_ms": 80,
        "status": "ok",
        **extra,
    }


def test_rollups_add_up_across_batches(database: Database) -> None:
    with database.session() as session:
        add_usage(session, [row(1, "p1", "k1", "m", 10, 5), row(1, "p1", "k1", "m", 20, 1, status="cancelled")])
    with database.session() as session:
        add_usage(session, [row(1, "p1", "k1", "m", 1, 1, status="error"), row(2, "p1", "k2", "m", 7, 0)])
    with database.session() as session:
        rollups = session.scalars(select(UsageDaily).order_by(UsageDaily.day, UsageDaily.key_id)).all()
        assert [(r.day, r.key_id, r.num_requests, r.num_cancelled, r.num_errors) for r in rollups] == [
            (date(2026, 11, 1), "k1", 3, 1, 1),
            (date(2026, 11, 2), "k2", 1, 0, 0),
        ]
        first = rollups[0]
        assert (first.prompt_tokens, first.completion_tokens, first.cost_micros) == (31, 7, 31 + 21)
        assert session.scalar(select(func.count()).select_from(UsageRecord)) == 4


def test_aggregates_group_and_filter(database: Database) -> None:
    with database.session() as session:
        add_usage(
            session,
            [row(1, "p1", "k1", "a", 10, 10), row(2, "p1", "k1", "b", 1, 1), row(2, "p2", "k3", "a", 5, 5)],
        )
    with database.session() as session:
        by_model = aggregate_usage(session, [UsageGrouping.MODEL], UsageFilter())
        assert [(r["model"], r["num_requests"], r["prompt_tokens"]) for r in by_model] == [("a", 2, 15), ("b", 1, 1)]
        since_second = UsageFilter(project_id="p1", since=date(2026, 11, 2))
        one_project = aggregate_usage(session, [UsageGrouping.DAY], since_second)
        assert [(r["day"], r["completion_tokens"]) for r in one_project] == [(date(2026, 11, 2), 1)]
        total = aggregate_usage(session, [], UsageFilter())
        assert total[0]["num_requests"] == 3
        assert monthly_totals(session, "p1", date(2026, 11, 1)) == (22, 11 + 33)
        newest = list_usage_records(session, UsageFilter(project_id="p2"))
        assert [(r.model, r.ttft_ms) for r in newest] == [("a", 12)]


def test_requests_without_a_project_roll_up_under_an_empty_id(database: Database) -> None:
    """With --no-auth there is no project or key; the rollup key uses "" so the primary key holds."""
    with database.session() as session:
        add_usage(session, [row(3, None, None, "m", 2, 2), row(3, None, None, "m", 2, 2)])
    with database.session() as session:
        rows = aggregate_usage(session, [UsageGrouping.PROJECT], UsageFilter())
        assert [(r["project_id"], r["num_requests"]) for r in rows] == [("", 2)]


def test_migrations_are_idempotent(database: Database) -> None:
    database.migrate()
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(UsageDaily)) == 0
