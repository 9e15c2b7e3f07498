"""State files are private: the data directory and the SQLite database hold every key hash and usage record.

Galerne creates `GALERNE_HOME` 0700 (`Settings.ensure_home`) and `galerne.db` 0600 (SQLite gives its `-wal`
and `-shm` files the database's mode), whatever the umask, and `galerne serve` warns about any of them that
other users can read — a directory made by hand, or a database made by an older version — with the command
that fixes it.

Example::

    create_private_file(home / "galerne.db")
    for warning in loose_permissions(home, sqlite_files("sqlite:////srv/galerne/galerne.db")): print(warning)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.engine import make_url

PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def create_private_file(path: Path) -> None:
    """Create an empty `path` readable by its owner only, unless it exists (then it is left as it is)."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE)
    except OSError:  # it exists, or SQLite will say in its own words why it cannot be opened
        return
    os.close(descriptor)


def sqlite_files(url: str) -> list[Path]:
    """The files of a SQLite database URL (database, WAL, shared memory); none for other databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return []
    database = Path(parsed.database)
    return [database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")]


def loose_permissions(directory: Path, files: Iterable[Path]) -> list[str]:
    """One line per existing path that users other than its owner may read or write, saying how to fix it."""
    warnings = []
    for path, private in ((directory, PRIVATE_DIRECTORY_MODE), *((file, PRIVATE_FILE_MODE) for file in files)):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            warnings.append(
                f"{path} is open to other users (mode {mode:04o}) and holds key hashes and usage records; "
                f"run: chmod {private:o} {path}"
            )
    return warnings
