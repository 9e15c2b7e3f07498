"""Reading and writing evaluation runs and results (tables in `eval_tables`).

Example::

    with database.session() as session:
        run = open_run(session, RunSpec(config_key="…", model="smollm2-135m-instruct", task="arc", ...))
        done = done_item_ids(session, run.id)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from galerne.storage.eval_tables import EvalResult, EvalRun


@dataclass(frozen=True, slots=True)
class RunSpec:
    config_key: str
    model: str
    task: str
    config: dict[str, Any]
    catalog_entry: dict[str, Any]
    num_items: int


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    item_id: str
    language: str
    subject: str
    is_correct: bool
    is_correct_norm: bool | None
    seconds: float
    details: dict[str, Any]


def open_run(session: Session, spec: RunSpec) -> EvalRun:
    """The run with this configuration, created when there is none yet (a rerun resumes it)."""
    run = session.scalars(select(EvalRun).where(EvalRun.config_key == spec.config_key)).first()
    if run is not None:
        return run
    run = EvalRun(
        id=uuid.uuid4().hex, config_key=spec.config_key, model=spec.model, task=spec.task, config=spec.config,
        catalog_entry=spec.catalog_entry, num_items=spec.num_items, created_at=datetime.now(UTC),
    )
    session.add(run)
    return run


def done_item_ids(session: Session, run_id: str) -> set[str]:
    return set(session.scalars(select(EvalResult.item_id).where(EvalResult.run_id == run_id)))


def add_outcome(session: Session, run_id: str, outcome: ItemOutcome) -> None:
    """Store one item's result; an item already stored is kept as it was (results are never overwritten)."""
    if session.get(EvalResult, (run_id, outcome.item_id)) is not None:
        return
    session.add(EvalResult(
        run_id=run_id, item_id=outcome.item_id, language=outcome.language, subject=outcome.subject,
        is_correct=outcome.is_correct, is_correct_norm=outcome.is_correct_norm, seconds=outcome.seconds,
        details=outcome.details, created_at=datetime.now(UTC),
    ))


def finish_run(session: Session, run_id: str) -> None:
    run = session.get(EvalRun, run_id)
    if run is not None:
        run.finished_at = datetime.now(UTC)


def find_runs(session: Session, *, run_ids: Sequence[str] = (), models: Sequence[str] = (),
              tasks: Sequence[str] = ()) -> list[EvalRun]:
    """Runs by id, or by model and task (all runs when nothing is given), oldest first."""
    query = select(EvalRun).order_by(EvalRun.created_at, EvalRun.id)
    if run_ids:
        query = query.where(EvalRun.id.in_(run_ids))
    if models:
        query = query.where(EvalRun.model.in_(models))
    if tasks:
        query = query.where(EvalRun.task.in_(tasks))
    return list(session.scalars(query))


def results_of(session: Session, run_id: str) -> list[EvalResult]:
    return list(session.scalars(select(EvalResult).where(EvalResult.run_id == run_id).order_by(EvalResult.item_id)))
