"""Web-app users, their login sessions and sign-up invites: the rows behind Le Chat's accounts.

Functions take a `Session` so the caller decides the transaction; nothing here knows about HTTP, cookies
or how passwords and tokens are hashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, joinedload

from galerne.storage.tables import Invite, User, WebSession


def add_user(session: Session, user: User) -> User:
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, user_id: str) -> User | None:
    """A user with their project loaded (one query)."""
    return session.scalars(select(User).options(joinedload(User.project)).where(User.id == user_id)).first()


def find_user_by_email(session: Session, email: str) -> User | None:
    """`email` must already be normalised (lower-cased), as stored."""
    return session.scalars(select(User).options(joinedload(User.project)).where(User.email == email)).first()


def list_users(session: Session) -> Sequence[User]:
    return session.scalars(select(User).options(joinedload(User.project)).order_by(User.created_at, User.email)).all()


def add_session(session: Session, web_session: WebSession) -> WebSession:
    session.add(web_session)
    session.flush()
    return web_session


def find_session(session: Session, session_id: str) -> WebSession | None:
    """A session with its user and the user's project, in one query: every page asks for it."""
    query = (
        select(WebSession)
        .options(joinedload(WebSession.user).joinedload(User.project))
        .where(WebSession.id == session_id)
    )
    return session.scalars(query).first()


def delete_session(session: Session, session_id: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id == session_id))


def delete_user_sessions(session: Session, user_id: str, *, keep: str | None = None) -> int:
    """End every session of a user (but `keep`); how many ended."""
    query = delete(WebSession).where(WebSession.user_id == user_id)
    if keep is not None:
        query = query.where(WebSession.id != keep)
    return session.execute(query).rowcount or 0  # type: ignore[attr-defined]


def delete_expired_sessions(session: Session, now: datetime, idle_since: datetime) -> int:
    """Drop sessions past their absolute end or unused since `idle_since`; how many."""
    query = delete(WebSession).where((WebSession.expires_at <= now) | (WebSession.last_seen_at <= idle_since))
    return session.execute(query).rowcount or 0  # type: ignore[attr-defined]


def add_invite(session: Session, invite: Invite) -> Invite:
    session.add(invite)
    session.flush()
    return invite


def find_invite(session: Session, invite_id: str) -> Invite | None:
    return session.get(Invite, invite_id)


def claim_invite(session: Session, invite_id: str, user_id: str, now: datetime) -> bool:
    """Mark an invite used by `user_id`, unless another sign-up used it first (one conditional UPDATE, so
    two concurrent sign-ups with one invite cannot both succeed)."""
    query = (
        update(Invite)
        .where(Invite.id == invite_id, Invite.used_at.is_(None))
        .values(used_at=now, used_by=user_id)
        .execution_options(synchronize_session=False)
    )
    return bool(session.execute(query).rowcount)  # type: ignore[attr-defined]
