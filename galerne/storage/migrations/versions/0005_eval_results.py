"""Evaluation runs and per-item results (`galerne eval`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("config_key", sa.String(64), nullable=False, unique=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("catalog_entry", sa.JSON(), nullable=False),
        sa.Column("num_items", sa.Integer(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("finished_at", _WHEN, nullable=True),
    )
    op.create_index("ix_eval_runs_model_task", "eval_runs", ["model", "task"])
    op.create_table(
        "eval_results",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("eval_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("item_id", sa.String(255), primary_key=True),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("is_correct", sa.Boolean(), nullable=False),
        sa.Column("is_correct_norm", sa.Boolean(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("eval_results")
    op.drop_index("ix_eval_runs_model_task", table_name="eval_runs")
    op.drop_table("eval_runs")
