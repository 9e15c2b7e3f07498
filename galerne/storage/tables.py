"""The tenancy tables: projects, their API keys, web-app users with their sessions and invites, usage records
and daily rollups.

Usage rows are deliberately narrow (ids, counts, integer micro-currency, milliseconds): LiteLLM's spend
log stored a model description in every row and reached 26 GB at 5.9M rows. Reports read `usage_daily`,
which the writer keeps up to date in the same transaction as the rows it rolls up.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, DateTime, Dialect, ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Money is stored as integer millionths of the catalogue's currency unit: exact sums, 8-byte rows.
MICROS_PER_UNIT = 1_000_000


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite hands back naive ones otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Project(Base):
    """Who pays: the unit of limits, budgets and allowed models."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, default=None)  # None: every model
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger, default=None)
    max_concurrent_requests: Mapped[int | None] = mapped_column(Integer, default=None)
    monthly_token_budget: Mapped[int | None] = mapped_column(BigInteger, default=None)
    monthly_budget_micros: Mapped[int | None] = mapped_column(BigInteger, default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    is_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    policy: Mapped[str | None] = mapped_column(String(64), default=None)  # a catalogue moderation policy
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    keys: Mapped[list[ApiKey]] = relationship(back_populates="project")


class ApiKey(Base):
    """A key is `gal-<id>.<secret>`: `id` finds the row, only a SHA-256 of the secret is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    project: Mapped[Project] = relationship(back_populates="keys")


class User(Base):
    """A person using the chat web app. `email` is stored lower-cased, so it is unique whatever the case typed;
    `project_id` is the project their chat traffic is metered and limited under."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    password_hash: Mapped[str | None] = mapped_column(String(256), default=None)
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"), default=None)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    is_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    locale: Mapped[str | None] = mapped_column(String(16), default=None)  # None: the browser's language
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    project: Mapped[Project | None] = relationship()


class WebSession(Base):
    """A login: the cookie holds a random token, only its SHA-256 is kept (`id`), so a leaked database
    logs nobody in. `csrf_token` must come back with every state-changing request of this session."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the absolute end, whatever the activity

    user: Mapped[User] = relationship()


class Invite(Base):
    """A single-use sign-up token (`galerne users invite`); only its SHA-256 is kept."""

    __tablename__ = "invites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(254), default=None)  # None: anyone holding it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    used_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)


class UsageRecord(Base):
    """One request: who, which model, how many tokens, what it cost, how long it took, how it ended."""

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    project_id: Mapped[str | None] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    # What a moderation policy did to the request, as `action:category,...` (`flag:hate_and_discrimination`).
    moderation: Mapped[str | None] = mapped_column(String(255), default=None)

    __table_args__ = (
        Index("ix_usage_records_project_created", "project_id", "created_at"),
        Index("ix_usage_records_key_created", "key_id", "created_at"),
    )


class UsageDaily(Base):
    """Per day, project, key and model: what reports and budgets read instead of scanning records."""

    __tablename__ = "usage_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(32), primary_key=True)  # "" when auth is off
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    num_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    num_cancelled: Mapped[int] = mapped_column(BigInteger, default=0)
    num_errors: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_usage_daily_project_day", "project_id", "day"),)


class UsageJournalCheckpoint(Base):
    """How far into a local journal segment the usage rows are in this database.

    Updated in the same transaction as the rows it counts, so a process killed after that commit but
    before removing the segment replays from here and bills nothing twice.
    """

    __tablename__ = "usage_journal_checkpoints"

    journal_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    committed_offset: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
