"""Uploaded documents: the file, its bytes, and its chunks with their embeddings.

A file belongs to one project (and, for Le Chat uploads, to one user of it); its chunks are what retrieval
ranks. The embedding column is float32 bytes on SQLite, the format sqlite-vec's distance functions read,
and `real[]` on PostgreSQL. The lexical index is the database's own: an FTS5 table on SQLite (made by the
migration, kept in step by `storage.documents`), a generated `tsvector` column with a GIN index on
PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import BigInteger, Dialect, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.dialects.postgresql import ARRAY, REAL
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from galerne.storage.tables import Base, UTCDateTime

Vector = npt.NDArray[np.float32]


class EmbeddingColumn(TypeDecorator[Vector]):
    """A float32 vector: raw little-endian bytes on SQLite (sqlite-vec's blob format), `real[]` on PostgreSQL."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(REAL()))
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Vector | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        vector = np.asarray(value, dtype="<f4")
        return [float(x) for x in vector] if dialect.name == "postgresql" else vector.tobytes()

    def process_result_value(self, value: Any, dialect: Dialect) -> Vector | None:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return np.asarray(value, dtype=np.float32)
        return np.frombuffer(value, dtype="<f4")


class StoredFile(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID, as la Plateforme's file ids
    project_id: Mapped[str | None] = mapped_column(String(32))  # None only on a --no-auth server
    user_id: Mapped[str | None] = mapped_column(String(32))  # a Le Chat upload: only that user sees it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    mime_type: Mapped[str] = mapped_column(String(128))
    num_bytes: Mapped[int] = mapped_column(BigInteger)
    num_pages: Mapped[int | None] = mapped_column(Integer)
    num_chunks: Mapped[int] = mapped_column(Integer)
    num_tokens: Mapped[int] = mapped_column(BigInteger)  # the extracted text's, in the embedding model's tokens
    embedding_model: Mapped[str] = mapped_column(String(128))
    is_temporary: Mapped[bool] = mapped_column(default=False)  # an inline document of one chat call

    __table_args__ = (Index("ix_files_project_created", "project_id", "created_at"),)


class FileContent(Base):
    """The uploaded bytes, apart from the file row so that listing files never loads them."""

    __tablename__ = "file_contents"

    file_id: Mapped[str] = mapped_column(String(36), ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class FileChunk(Base):
    __tablename__ = "file_chunks"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    file_id: Mapped[str] = mapped_column(String(36), ForeignKey("files.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    heading_path: Mapped[str] = mapped_column(Text)  # "Title > Section", what the passage sits under
    page_start: Mapped[int | None] = mapped_column(Integer)
    page_end: Mapped[int | None] = mapped_column(Integer)
    num_tokens: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[Vector] = mapped_column(EmbeddingColumn())

    __table_args__ = (Index("ix_file_chunks_file_index", "file_id", "index", unique=True),)
