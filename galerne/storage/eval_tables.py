"""Evaluation runs and their per-item results.

A run is one (model, task, configuration): `config` holds the exact configuration (data file digest
included) and `catalog_entry` the model's catalogue entry as it was, so a result can always be traced to
what produced it. `config_key` (a digest of `config`) is how a rerun finds the run it resumes. Results are
one row per item, written as each item finishes, so an interrupted run loses at most the items in flight.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from galerne.storage.tables import Base, UTCDateTime


class EvalRun(Base):
    __tablename__ = "eval_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    config_key: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    catalog_entry: Mapped[dict[str, Any]] = mapped_column(JSON)
    num_items: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    __table_args__ = (Index("ix_eval_runs_model_task", "model", "task"),)


class EvalResult(Base):
    """One item's outcome: `is_correct` (accuracy, or pass@1), `is_correct_norm` (length-normalised
    accuracy, for log-likelihood scoring only), and `details` (the prediction and what it came from)."""

    __tablename__ = "eval_results"

    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    language: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(128))
    is_correct: Mapped[bool] = mapped_column(Boolean)
    is_correct_norm: Mapped[bool | None] = mapped_column(Boolean, default=None)
    seconds: Mapped[float] = mapped_column(Float)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
