"""The console's tables: who may manage which project, what was changed by whom, and refused requests.

- `project_members`: a web user's access to a project in the console (`galerne users grant`); operators
  (`users.is_admin`) see every project without a row here.
- `audit_events`: one row per key created or revoked, project created or limit changed, member granted —
  from the console, the admin API or the CLI alike — written in the same transaction as the change.
- `refusals_daily`: requests refused (429) by a project's limits or budget, counted per day, project, key
  and reason; counts are summed in memory and written with the usage batches, so a 429 storm costs no
  database write per request.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from galerne.storage.tables import Base, UTCDateTime


class ProjectMember(Base):
    __tablename__ = "project_members"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True,
                                            index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """`actor` is what a reader recognises (an e-mail, `cli`, `admin key <id>`); `actor_id` the user's id."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(254))
    actor_id: Mapped[str | None] = mapped_column(String(32), default=None)
    action: Mapped[str] = mapped_column(String(32))
    project_id: Mapped[str | None] = mapped_column(String(32), default=None)
    target: Mapped[str] = mapped_column(String(128), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (Index("ix_audit_events_created", "created_at"),)


class RefusalDaily(Base):
    __tablename__ = "refusals_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    reason: Mapped[str] = mapped_column(String(48), primary_key=True)
    num_refused: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_refusals_daily_project_day", "project_id", "day"),)
