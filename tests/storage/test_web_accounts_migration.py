"""Migration 0003: users made before it (with the bare users table of 0001) survive, enabled."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from galerne.storage.database import Database
from tests.databases import fresh_database_url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_existing_users_are_kept_and_enabled(kind: str, tmp_path: Path) -> None:
    with fresh_database_url(kind, tmp_path) as url:
        database = Database.open(url, migrate=False)
        try:
            config = Config()
            config.set_main_option("script_location", str(files("galerne.storage").joinpath("migrations")))
            with database.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "0002")
            with database.engine.begin() as connection:
                connection.execute(text(
                    "INSERT INTO users (id, email, display_name, is_admin, created_at) "
                    "VALUES ('u1', 'old@example.org', 'Old', false, CURRENT_TIMESTAMP)"
                ))
            database.migrate()
            with database.engine.connect() as connection:
                row = connection.execute(text("SELECT is_disabled, locale FROM users WHERE id = 'u1'")).one()
                assert (bool(row[0]), row[1]) == (False, None)
                tables = {"sessions", "invites"}
                if kind == "sqlite":
                    names = {r[0] for r in connection.execute(text("SELECT name FROM sqlite_master"))}
                else:
                    names = {r[0] for r in connection.execute(text("SELECT tablename FROM pg_tables"))}
                assert tables <= names
        finally:
            database.close()
