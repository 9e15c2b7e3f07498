"""The moderation audit trail, the policy a project is under, and a usage record's moderation outcome.

Revision ID: 0007
Revises: 0006_console
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "moderation_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
    )
    op.create_index("ix_moderation_events_project_created", "moderation_events", ["project_id", "created_at"])
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("policy", sa.String(64), nullable=True))
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("moderation", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("moderation")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("policy")
    op.drop_index("ix_moderation_events_project_created", table_name="moderation_events")
    op.drop_table("moderation_events")
