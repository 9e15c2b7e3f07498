"""The console: project members, the audit trail and daily counts of refused requests.

Revision ID: 0006_console
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_console"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.String(32)
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "project_members",
        sa.Column("user_id", _ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("project_id", _ID, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("created_at", _WHEN, nullable=False),
    )
    op.create_index("ix_project_members_project_id", "project_members", ["project_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("actor", sa.String(254), nullable=False),
        sa.Column("actor_id", _ID, nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("project_id", _ID, nullable=True),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_events_created", "audit_events", ["created_at"])
    op.create_table(
        "refusals_daily",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("project_id", _ID, primary_key=True),
        sa.Column("key_id", _ID, primary_key=True),
        sa.Column("reason", sa.String(48), primary_key=True),
        sa.Column("num_refused", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_refusals_daily_project_day", "refusals_daily", ["project_id", "day"])


def downgrade() -> None:
    op.drop_index("ix_refusals_daily_project_day", table_name="refusals_daily")
    op.drop_table("refusals_daily")
    op.drop_index("ix_audit_events_created", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_project_members_project_id", table_name="project_members")
    op.drop_table("project_members")
