"""Uploaded documents, their bytes and their chunks, with a vector column and a lexical index.

Revision ID: 0008_documents
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, REAL, TSVECTOR

revision = "0008_documents"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    is_postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "files",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(32), nullable=True),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("mime_type", sa.String(128), nullable=False),
        sa.Column("num_bytes", sa.BigInteger(), nullable=False),
        sa.Column("num_pages", sa.Integer(), nullable=True),
        sa.Column("num_chunks", sa.Integer(), nullable=False),
        sa.Column("num_tokens", sa.BigInteger(), nullable=False),
        sa.Column("embedding_model", sa.String(128), nullable=False),
        sa.Column("is_temporary", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_files_project_created", "files", ["project_id", "created_at"])
    op.create_table(
        "file_contents",
        sa.Column("file_id", sa.String(36), sa.ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    embedding_type: sa.types.TypeEngine[Any] = ARRAY(REAL()) if is_postgres else sa.LargeBinary()
    op.create_table(
        "file_chunks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("file_id", sa.String(36), sa.ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("heading_path", sa.Text(), nullable=False),
        sa.Column("page_start", sa.Integer(), nullable=True),
        sa.Column("page_end", sa.Integer(), nullable=True),
        sa.Column("num_tokens", sa.Integer(), nullable=False),
        sa.Column("embedding", embedding_type, nullable=False),
    )
    op.create_index("ix_file_chunks_file_index", "file_chunks", ["file_id", "index"], unique=True)
    if is_postgres:
        # 'simple': no stemming or stop words of one language; the documents are in five.
        op.add_column(
            "file_chunks",
            sa.Column("search", TSVECTOR(), sa.Computed("to_tsvector('simple', heading_path || ' ' || text)")),
        )
        op.create_index("ix_file_chunks_search", "file_chunks", ["search"], postgresql_using="gin")
    else:
        # rowid = file_chunks.id; written and deleted with the chunks, in the same transaction.
        op.execute("CREATE VIRTUAL TABLE file_chunks_fts USING fts5(text, tokenize = 'unicode61 remove_diacritics 2')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TABLE file_chunks_fts")
    op.drop_table("file_chunks")
    op.drop_table("file_contents")
    op.drop_index("ix_files_project_created", table_name="files")
    op.drop_table("files")
