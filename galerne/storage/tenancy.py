"""Projects and API keys: the rows behind authentication and limits.

Functions take a `Session` so the caller decides the transaction; nothing here knows about HTTP or
how secrets are hashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, joinedload

from galerne.storage.tables import ApiKey, Project


def add_project(session: Session, project: Project) -> Project:
    session.add(project)
    session.flush()
    return project


def find_project(session: Session, name_or_id: str) -> Project | None:
    """A project by name, or by id when no project has that name."""
    by_name = session.scalars(select(Project).where(Project.name == name_or_id)).first()
    return by_name or session.get(Project, name_or_id)


def list_projects(session: Session) -> Sequence[Project]:
    return session.scalars(select(Project).order_by(Project.created_at, Project.name)).all()


def add_key(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.flush()
    return key


def find_key(session: Session, key_id: str) -> ApiKey | None:
    """A key with its project loaded, for authentication."""
    return session.scalars(select(ApiKey).options(joinedload(ApiKey.project)).where(ApiKey.id == key_id)).first()


def list_keys(session: Session, project_id: str | None = None) -> Sequence[ApiKey]:
    query = select(ApiKey).options(joinedload(ApiKey.project)).order_by(ApiKey.created_at)
    if project_id is not None:
        query = query.where(ApiKey.project_id == project_id)
    return session.scalars(query).all()


def has_admin_key(session: Session, now: datetime) -> bool:
    """Whether any admin key works at `now`: not revoked, not expired, in a project neither disabled nor expired."""
    query = (
        select(ApiKey.id)
        .join(ApiKey.project)
        .where(
            ApiKey.is_admin.is_(True),
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
            Project.is_disabled.is_(False),
            or_(Project.expires_at.is_(None), Project.expires_at > now),
        )
    )
    return session.execute(query.limit(1)).first() is not None
