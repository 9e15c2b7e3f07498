"""Login sessions on real databases: idle and absolute expiry, logout, and what a session says of its user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from galerne.services.sessions import SessionPolicy, SessionService
from galerne.services.users import SignUp, UserPolicy, UserService, token_hash
from galerne.storage.database import Database
from galerne.storage.tables import WebSession


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _user(database: Database) -> str:
    return UserService(database, UserPolicy(signup="open")).sign_up(
        SignUp(email="sam@example.org", password="correct horse battery")
    ).id


def test_only_the_token_hash_is_stored_and_a_session_knows_its_user(database: Database) -> None:
    user_id = _user(database)
    sessions = SessionService(database)
    started = sessions.start(user_id)
    with database.session() as session:
        stored = session.get(WebSession, token_hash(started.token))
        assert stored is not None and stored.user_id == user_id
        assert session.get(WebSession, started.token) is None
    active = sessions.resolve(started.token)
    assert active is not None
    assert active.user.email == "sam@example.org" and active.csrf_token == started.csrf_token
    assert active.principal is not None and active.principal.user_id == user_id
    assert sessions.resolve("not-a-token") is None and sessions.resolve(None) is None


def test_idle_expiry_is_pushed_back_by_use(database: Database) -> None:
    clock = Clock()
    sessions = SessionService(database, SessionPolicy(idle_seconds=600, max_seconds=86400), clock=clock)
    started = sessions.start(_user(database))
    for _ in range(5):  # used every 9 minutes: never idle for 10
        clock.now += timedelta(minutes=9)
        assert sessions.resolve(started.token) is not None
    clock.now += timedelta(minutes=10, seconds=1)
    assert sessions.resolve(started.token) is None
    with database.session() as session:  # and the row is gone
        assert session.get(WebSession, token_hash(started.token)) is None


def test_absolute_expiry_ends_even_a_busy_session(database: Database) -> None:
    clock = Clock()
    sessions = SessionService(database, SessionPolicy(idle_seconds=600, max_seconds=3600), clock=clock)
    started = sessions.start(_user(database))
    for _ in range(6):
        clock.now += timedelta(minutes=9)
        assert sessions.resolve(started.token) is not None
    clock.now += timedelta(minutes=7)  # 61 minutes after login, 7 after last use
    assert sessions.resolve(started.token) is None


def test_logout_and_purge(database: Database) -> None:
    clock = Clock()
    sessions = SessionService(database, SessionPolicy(idle_seconds=600, max_seconds=3600), clock=clock)
    user_id = _user(database)
    ended, stale, fresh = sessions.start(user_id), sessions.start(user_id), None
    sessions.end(ended.token)
    assert sessions.resolve(ended.token) is None
    clock.now += timedelta(minutes=11)
    fresh = sessions.start(user_id)
    assert sessions.purge_expired() == 1  # `stale`; `fresh` stays
    assert sessions.resolve(fresh.token) is not None
    assert sessions.resolve(stale.token) is None
