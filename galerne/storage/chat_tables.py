"""Le Chat's history: a user's conversations and their messages.

Kept apart from the tenancy tables because they grow with use, not with configuration: a busy user has
thousands of conversations and tens of thousands of messages, so every read the pages make goes through
an index — the list by (user_id, updated_at, id), a conversation's messages by (conversation_id,
position), and search through a full-text index (SQLite FTS5 / PostgreSQL GIN over `to_tsvector`) that
migration 0004_web_conversations creates beside these tables. The documents a user attached to a
conversation are linked by `conversation_files` (migration 0009); they are that user's uploads for it, and
go when it goes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from galerne.storage.tables import Base, UTCDateTime


class Conversation(Base):
    """One chat thread of one user; `model` is the model its next reply uses (switchable at any time)."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200), default="")
    model: Mapped[str] = mapped_column(String(128))
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_conversations_user_updated", "user_id", "updated_at", "id"),)


class Message(Base):
    """One turn. An assistant message records the model that wrote it, its token counts, how it ended
    (`stop`, `length`, `cancelled` when the user stopped it or left, `error`) and, when the conversation had
    documents, the passages it was given (`references`: `DocumentReference` objects as JSON)."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(128), default=None)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    finish_reason: Mapped[str | None] = mapped_column(String(16), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    references: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)

    __table_args__ = (UniqueConstraint("conversation_id", "position", name="uq_messages_conversation_position"),)


class ConversationFile(Base):
    """A document attached to a conversation: every reply in it is grounded in the conversation's files."""

    __tablename__ = "conversation_files"

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    file_id: Mapped[str] = mapped_column(String(36), ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
