"""Web accounts: users may be disabled and choose a language; login sessions and sign-up invites.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.String(32)
_HASH = sa.String(64)
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as users:
        users.add_column(sa.Column("is_disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
        users.add_column(sa.Column("locale", sa.String(16), nullable=True))
        users.add_column(sa.Column("last_login_at", _WHEN, nullable=True))
    op.create_table(
        "sessions",
        sa.Column("id", _HASH, primary_key=True),
        sa.Column("user_id", _ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("last_seen_at", _WHEN, nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_table(
        "invites",
        sa.Column("id", _HASH, primary_key=True),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.Column("used_at", _WHEN, nullable=True),
        sa.Column("used_by", _ID, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("invites")
    op.drop_index("ix_sessions_user_id", table_name="sessions")
    op.drop_table("sessions")
    with op.batch_alter_table("users") as users:
        users.drop_column("last_login_at")
        users.drop_column("locale")
        users.drop_column("is_disabled")
