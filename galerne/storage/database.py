"""Open the database named by `GALERNE_DATABASE_URL` (SQLite in the data directory by default) and
bring its schema to the newest migration, so every start, CLI command included, finds the tables it needs.

Example::

    database = Database.open("sqlite:////srv/galerne/galerne.db")
    with database.session() as session: ...
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Any, TypeVar

import sqlean
import sqlite_vec
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from galerne.errors import ConfigurationError
from galerne.storage.files import create_private_file, sqlite_files

logger = logging.getLogger(__name__)
T = TypeVar("T")

# SQLite and a running server share one file with the CLI: WAL lets readers and the writer overlap,
# and the busy timeout makes a second writer wait instead of failing with "database is locked".
_SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA busy_timeout=10000", "PRAGMA foreign_keys=ON",
                   "PRAGMA synchronous=NORMAL")


class Database:
    """One SQLAlchemy engine and its session factory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Database:
        """Connect and migrate; a wrong URL or an unreachable server is a clear start-up error."""
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigurationError(f"GALERNE_DATABASE_URL is not a database URL: {exc}") from exc
        options: dict[str, Any] = {"pool_pre_ping": True}
        if parsed.get_backend_name() == "sqlite":
            # CPython's own sqlite3 is often built without extension loading; sqlean is the same module with
            # it, so sqlite-vec's vector functions can rank document chunks inside the database.
            options["module"] = sqlean
            options["connect_args"] = {"check_same_thread": False}
            for database_file in sqlite_files(url)[:1]:  # made 0600 before SQLite makes it with the umask's mode
                create_private_file(database_file)
        engine = create_engine(parsed, **options)
        if parsed.get_backend_name() == "sqlite":
            event.listen(engine, "connect", _apply_sqlite_pragmas)
        database = cls(engine)
        if migrate:
            database.migrate()
        return database

    def migrate(self) -> None:
        """Apply every Alembic migration not yet applied (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(files("galerne.storage").joinpath("migrations")))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            raise ConfigurationError(
                f"cannot open the database {self.location()}: {exc.orig}"
            ) from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed when the block ends normally, rolled back otherwise."""
        with self._sessions.begin() as session:
            yield session

    async def run(self, work: Callable[[Session], T]) -> T:
        """`work(session)` in one transaction, on a worker thread: services call it from the event loop, which
        must not wait on the database."""

        def in_session() -> T:
            with self.session() as session:
                return work(session)

        return await asyncio.to_thread(in_session)

    def is_reachable(self) -> bool:
        """One `SELECT 1`, for health checks; a failure is logged with its cause (which may name the host)."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            logger.warning("the database %s is unreachable: %s", self.location(), exc)
            return False
        return True

    def location(self) -> str:
        """The URL without its password, for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()


def _apply_sqlite_pragmas(connection: Any, _record: Any) -> None:
    connection.enable_load_extension(True)
    sqlite_vec.load(connection)
    connection.enable_load_extension(False)
    cursor = connection.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()
