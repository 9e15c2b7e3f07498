"""The moderation audit trail: one row per category a policy acted on (block, flag, refuse, mask).

The offending text is kept only when the policy says so (`keep_text`); otherwise a row says who, where,
what and how sure, never what was written.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from galerne.storage.tables import Base, UTCDateTime


class ModerationEvent(Base):
    __tablename__ = "moderation_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    project_id: Mapped[str | None] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(String(64))  # an API key's id, or `user:<id>` for Le Chat
    model: Mapped[str] = mapped_column(String(128))
    policy: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))  # input | output
    category: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(8))  # block | flag | refuse | mask
    text: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (Index("ix_moderation_events_project_created", "project_id", "created_at"),)
