"""The external services some tests need — a PostgreSQL server and Redis on loopback — and what happens
when they are down: such a test skips on a developer's machine, but FAILS in CI (`CI=true`), where a green
run must mean that everything ran.

`GALERNE_TEST_POSTGRES_URL` and `GALERNE_TEST_REDIS_URL` point the tests elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

POSTGRES_SERVER = os.environ.get("GALERNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GALERNE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unreachable(what: str) -> NoReturn:
    """Skip the test for want of `what` — or, under `CI=true`, fail it."""
    if is_ci():
        pytest.fail(f"{what}; under CI=true a test that needs it fails instead of skipping", pytrace=False)
    pytest.skip(what)


def require_redis() -> str:
    """The URL of a Redis that answers (see `unreachable` when none does)."""
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        unreachable(f"Redis is not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@contextmanager
def fresh_database_url(kind: str, directory: Path) -> Iterator[str]:
    """A URL to an empty database of `kind` ("sqlite" or "postgresql"), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / f'{uuid.uuid4().hex}.db'}"
        return
    name = f"galerne_test_{uuid.uuid4().hex[:12]}"
    server = make_url(POSTGRES_SERVER)
    admin = create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        unreachable(f"PostgreSQL is not reachable at {server.render_as_string(hide_password=True)}: {exc.orig}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
