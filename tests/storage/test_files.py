"""The data directory and the SQLite files are private to their owner, and `serve` warns when they are not."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from galerne.storage.database import Database
from tests.conftest import run_cli, start_server, stop_server


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The common umask 022, under which files are created world-readable unless made otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_fresh_home_and_its_database_files_are_private(tmp_path: Path, usual_umask: None) -> None:
    home = tmp_path / "fresh" / "galerne"
    run_cli(home, "projects", "list")
    assert mode(home) == 0o700 and mode(home / "galerne.db") == 0o600
    database = Database.open(f"sqlite:///{home / 'galerne.db'}")
    try:
        with database.session() as session:  # a write while open: the WAL and shared-memory files exist
            session.execute(text("CREATE TABLE probe (x INTEGER)"))
        assert mode(home / "galerne.db-wal") == 0o600 and mode(home / "galerne.db-shm") == 0o600
    finally:
        database.close()


def test_serve_warns_about_a_home_and_a_database_others_can_read(tmp_path: Path, usual_umask: None) -> None:
    home = tmp_path / "loose"
    home.mkdir(mode=0o755)
    sqlite3.connect(home / "galerne.db").close()  # made by hand, or by an older version: 0644
    config = home / "catalogue.toml"
    config.write_text('[[models]]\nid = "far"\nengine = "remote"\nbase_url = "http://127.0.0.1:9/v1"\n')
    server = start_server(home, env={"GALERNE_CONFIG": str(config)}, extra_args=("--no-auth",))
    stop_server(server)
    log = server.log()
    assert f"WARNING: {home} is open to other users (mode 0755)" in log and f"run: chmod 700 {home}" in log
    assert f"{home / 'galerne.db'} is open to other users (mode 0644)" in log
    assert f"run: chmod 600 {home / 'galerne.db'}" in log
