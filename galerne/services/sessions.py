"""Login sessions of Le Chat: a random token in the `galerne_session` cookie, its SHA-256 in the database.

A session ends after `idle_seconds` without use or `max_seconds` after login, whichever comes first, and at
once when its user logs out, is disabled or changes password (other sessions). Each carries its own CSRF
token, which every state-changing request must send back. Looking a session up is one query (session, user
and project joined); its last use is written at most once a minute, so reading pages costs no writes.

Example::

    sessions = SessionService(database, SessionPolicy(idle_seconds=3600, max_seconds=86400))
    started = sessions.start(user.id)                # started.token goes into the cookie, never stored
    active = sessions.resolve(started.token)         # None once expired, ended, or the user is disabled
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from galerne.errors import GalerneError
from galerne.services.auth import Principal
from galerne.services.users import UserInfo, token_hash, user_info, user_principal
from galerne.storage import users as store
from galerne.storage.database import Database
from galerne.storage.tables import WebSession

# How stale `last_seen_at` may get (or a quarter of the idle time, if less): idle expiry is at most this late.
TOUCH_EVERY = timedelta(seconds=60)
PURGE_EVERY_SECONDS = 3600.0  # expired rows are refused anyway; a login now and then clears them out


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle_seconds: int = 7 * 24 * 3600
    max_seconds: int = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class StartedSession:
    token: str  # for the cookie only
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ActiveSession:
    """A valid session: whose it is, the caller their chat runs as, and the CSRF token to expect."""

    id: str  # the stored hash, never the cookie's token
    user: UserInfo
    principal: Principal | None  # None when the user's project cannot be used now (the error says why)
    principal_error: GalerneError | None
    csrf_token: str


class SessionService:
    def __init__(
        self, database: Database, policy: SessionPolicy | None = None, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._database = database
        self.policy = policy or SessionPolicy()
        self._now = clock or (lambda: datetime.now(UTC))
        self._last_purge = time.monotonic()

    def start(self, user_id: str) -> StartedSession:
        """A new session for a user who just proved who they are (and, once an hour, expired ones dropped)."""
        if time.monotonic() - self._last_purge >= PURGE_EVERY_SECONDS:
            self._last_purge = time.monotonic()
            self.purge_expired()
        token = secrets.token_urlsafe(32)
        now = self._now()
        web_session = WebSession(
            id=token_hash(token), user_id=user_id, csrf_token=secrets.token_urlsafe(32), created_at=now,
            last_seen_at=now, expires_at=now + timedelta(seconds=self.policy.max_seconds),
        )
        with self._database.session() as session:
            store.add_session(session, web_session)
        return StartedSession(token=token, csrf_token=web_session.csrf_token, expires_at=web_session.expires_at)

    def resolve(self, token: str | None) -> ActiveSession | None:
        """The session of a cookie's token, or None (and the row dropped) when it has expired or its user is
        disabled."""
        if not token or len(token) > 128:
            return None
        now = self._now()
        with self._database.session() as session:
            web_session = store.find_session(session, token_hash(token))
            if web_session is None:
                return None
            idle_end = web_session.last_seen_at + timedelta(seconds=self.policy.idle_seconds)
            if web_session.expires_at <= now or idle_end <= now or web_session.user.is_disabled:
                store.delete_session(session, web_session.id)
                return None
            if now - web_session.last_seen_at >= min(TOUCH_EVERY, timedelta(seconds=self.policy.idle_seconds / 4)):
                web_session.last_seen_at = now
            user = web_session.user
            principal: Principal | None = None
            error: GalerneError | None = None
            try:
                principal = user_principal(user)
            except GalerneError as exc:
                error = exc
            return ActiveSession(
                id=web_session.id, user=user_info(user), principal=principal, principal_error=error,
                csrf_token=web_session.csrf_token,
            )

    def end(self, token: str | None) -> None:
        """Log out: the session is gone from the database, so a copied cookie no longer works either."""
        if token:
            with self._database.session() as session:
                store.delete_session(session, token_hash(token))

    def end_all(self, user_id: str, *, keep: str | None = None) -> int:
        with self._database.session() as session:
            return store.delete_user_sessions(session, user_id, keep=keep)

    def purge_expired(self) -> int:
        """Drop every expired session (run now and then; expired sessions are refused anyway)."""
        now = self._now()
        with self._database.session() as session:
            return store.delete_expired_sessions(session, now, now - timedelta(seconds=self.policy.idle_seconds))
