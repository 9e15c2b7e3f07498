"""An append-only journal on local disk: JSON lines in segment files, one segment per live server process.

Why: a usage record must outlive the process that made it. Between a client receiving its answer and the
batch that holds the record reaching the database, the process may be killed (SIGKILL, the OOM killer, a
crash). One `write(2)` of a whole line puts the record in the kernel's page cache, which outlives the
process; there is deliberately no fsync (the process dies, not the machine; an fsync per request costs
milliseconds).

Ownership: a process appends only to segments it holds an exclusive `flock` on. The kernel drops the lock
when the process dies, however it dies, so a starting process tells a dead process's segment (it can lock
it) from a live one's (it cannot) without pid files, also across `galerne serve --workers N`. A segment is
created under a temporary name and renamed once locked, so no other process can adopt it in between; an
adopter checks that the path still names the file it locked, so a segment removed by its previous adopter
is never replayed twice.

Reading skips what a killed writer may leave: a torn last line (no newline) and any line that is not a JSON
object are skipped, and the offset moves past them, so a bad line never stops a replay.

Example::

    journal = Journal(home / "usage-journal")
    segment = journal.create_segment()
    start, end = segment.append({"model": "smollm2", "prompt_tokens": 12})
    records, offset = segment.read(0, end, max_records=1000)   # ([{...}], end)
    for orphan in journal.adopt_orphans(): ...                    # segments of dead processes
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"
_CREATING_SUFFIX = ".creating"
_READ_BYTES = 1 << 20


class JournalSegment:
    """One segment file, locked by this process: append lines, read them back by byte offset."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.id = path.name.removesuffix(SEGMENT_SUFFIX)
        self._fd = fd
        self.size = os.fstat(fd).st_size

    def append(self, record: Mapping[str, Any]) -> tuple[int, int]:
        """Write one record as one line; returns its (start, end) byte offsets.

        On failure (disk full) the file is cut back to where it was, so a half-written line cannot glue
        itself to the next record, and the OSError is raised to the caller.
        """
        data = _ENCODER.encode(record).encode() + b"\n"
        start = self.size
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self.size = os.fstat(self._fd).st_size  # the next read will skip the torn line
            raise
        self.size = start + len(data)
        return start, self.size

    def read(self, start: int, end: int, max_records: int) -> tuple[list[dict[str, Any]], int]:
        """Up to `max_records` records from the complete lines in [start, end), and the offset after the
        last line consumed (skipped bad lines included). A torn line at `end` is left unread."""
        records: list[dict[str, Any]] = []
        position = start
        want = _READ_BYTES
        while len(records) < max_records and position < end:
            chunk = os.pread(self._fd, min(want, end - position), position)
            consumed = 0
            while len(records) < max_records:
                newline = chunk.find(b"\n", consumed)
                if newline < 0:
                    break
                record = _decode(chunk[consumed:newline], self.path, position + consumed)
                consumed = newline + 1
                if record is not None:
                    records.append(record)
            if consumed == 0:
                if len(chunk) < want:  # the rest up to `end` is one torn line
                    break
                want *= 2  # a line longer than one read: read more at once
                continue
            position += consumed
        return records, position

    def remove(self) -> None:
        """Delete the file (its records are all in the database), then let go of it."""
        self.path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        """Let go of the file, keeping it on disk for the next process to replay."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Journal:
    """A directory of segments: this process's own, and those left behind by dead processes."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory

    def create_segment(self) -> JournalSegment:
        """A new, empty segment owned by this process until `close` or `remove` (or its death)."""
        name = uuid.uuid4().hex
        creating = self.directory / f"{name}{_CREATING_SUFFIX}"
        fd = os.open(creating, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows the name yet: cannot block
        path = self.directory / f"{name}{SEGMENT_SUFFIX}"
        os.rename(creating, path)
        return JournalSegment(path, fd)

    def adopt_orphans(self) -> list[JournalSegment]:
        """Lock every segment no live process holds, oldest first; the caller replays and removes them."""
        for leftover in self.directory.glob(f"*{_CREATING_SUFFIX}"):
            # Killed between creating and renaming: never written to. Remove it unless it is being created now.
            fd = _open_locked(leftover)
            if fd is not None:
                leftover.unlink(missing_ok=True)
                os.close(fd)
        orphans: list[JournalSegment] = []
        paths = sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}"), key=_modified_time)
        for path in paths:
            fd = _open_locked(path)
            if fd is not None:
                orphans.append(JournalSegment(path, fd))
        return orphans


def _open_locked(path: Path) -> int | None:
    """The file at `path`, exclusively locked; None when a live process holds it or it is gone."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino != os.fstat(fd).st_ino:  # removed (or replaced) while we waited
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


def _modified_time(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _encode(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot journal a {type(value).__name__}")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_encode)  # one, not one per `json.dumps` call


def _decode(line: bytes, path: Path, offset: int) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        logger.warning("skipping a damaged line of %d bytes at offset %d of %s", len(line), offset, path)
        return None
    return record
