"""Documents attached to Le Chat's conversations, and the passages an answer was given.

Revision ID: 0009_conversation_files
Revises: 0008_documents
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_conversation_files"
down_revision = "0008_documents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_files",
        sa.Column(
            "conversation_id", sa.String(32), sa.ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("file_id", sa.String(36), sa.ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    # A plain ADD COLUMN, not a batch copy: on SQLite a copied `messages` table would lose its FTS triggers.
    op.add_column("messages", sa.Column("references", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "references")
    op.drop_table("conversation_files")
