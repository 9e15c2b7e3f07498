"""Usage records: one per request, journalled to local disk as the request ends, then written to the
database in batches by a background thread.

Durability: `record` appends the record to this process's journal segment (one `write(2)`, no fsync, no
database call) before it returns, and the chat service records a request before the last byte of its reply
goes out, so every answered request has a record that survives the process being killed. The writer thread
copies records to the database every `flush_seconds`; each batch commits together with the segment offset
it reaches. At start the meter adopts the segments of dead processes (an earlier run, or a dead worker of
this one) and writes what lies past their checkpoints before the server takes requests.

Why a checkpoint rather than a unique id per record and insert-if-absent: it costs one small upsert per
batch, not a unique index on every usage row and a conflict check per row; rollups stay a plain sum over
the batch; and a commit whose outcome is unknown (connection lost during COMMIT) is settled by reading the
checkpoint back before retrying. Exactly once follows: rows and offset commit atomically, replay starts at
the checkpoint, and a segment leaves the disk only once its checkpoint has reached its end.

Bounds: the active segment's records are also kept in memory (at most `max_pending`), so the writer does
not read back what it just wrote. Past that (the database is down or slow) records stay on disk only and
are read back `max_batch` at a time when the database returns. When the unwritten backlog on disk reaches
`max_journal_bytes`, `check_capacity` refuses new requests with 503, since their billing could no longer be
guaranteed, until the writer has caught up; requests already admitted still record, so the bound is passed
by at most the requests in flight. With `is_journalled=False` (an operator's choice for a data directory that
does not outlive the process) records are held in memory only, lost on SIGKILL, and `max_pending` unwritten
records is the refusal bound; segments left by earlier journalled runs are still replayed.

Example::

    meter = UsageMeter(database, home / "usage-journal")
    meter.check_capacity()       # MeteringUnavailableError (503) past the bound
    meter.record(UsageEvent(project_id="p1", key_id="k1", model="smollm2", prompt_tokens=12, ...))
    meter.close()                # writes what is left; what the database cannot take stays journalled
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from galerne.errors import MeteringUnavailableError
from galerne.storage.console import add_refusals
from galerne.storage.database import Database
from galerne.storage.journal import Journal, JournalSegment
from galerne.storage.usage import add_usage, forget_journal, journal_offset, save_journal_offset

logger = logging.getLogger(__name__)


class UsageStatus(StrEnum):
    OK = "ok"
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class UsageEvent:
    project_id: str | None
    key_id: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    ttft_seconds: float | None
    duration_seconds: float
    status: UsageStatus
    finished_at: datetime
    moderation: str | None = None  # what a policy did: `flag:hate_and_discrimination`, `mask:pii`, ...

    def as_row(self) -> dict[str, Any]:
        return {
            "created_at": self.finished_at,
            "project_id": self.project_id,
            "key_id": self.key_id,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_micros": self.cost_micros,
            "ttft_ms": None if self.ttft_seconds is None else round(self.ttft_seconds * 1000),
            "duration_ms": round(self.duration_seconds * 1000),
            "status": self.status.value,
            "moderation": self.moderation,
        }


_ROW_KEYS = frozenset({
    "created_at", "project_id", "key_id", "model", "prompt_tokens", "completion_tokens", "cost_micros", "ttft_ms",
    "duration_ms", "status", "moderation",
})  # the keys of `UsageEvent.as_row`; a journal written before `moderation` existed lacks only that one


@dataclass(frozen=True, slots=True)
class MeterOptions:
    """How often the writer runs and what it may hold: see the module docstring for the bounds."""

    is_journalled: bool = True
    flush_seconds: float = 0.5
    max_pending: int = 5000
    max_journal_bytes: int = 1 << 30
    max_batch: int = 5000
    rotate_bytes: int = 4 << 20  # a fully written segment this big is replaced by a fresh one


def cost_micros(prompt_tokens: int, completion_tokens: int, input_per_million: float, output_per_million: float) -> int:
    """Price per million tokens is exactly millionths of the currency unit per token."""
    return round(prompt_tokens * input_per_million + completion_tokens * output_per_million)


def now_utc() -> datetime:
    return datetime.now(UTC)


class UsageMeter:
    def __init__(self, database: Database, journal_dir: Path, options: MeterOptions | None = None) -> None:
        self._database = database
        self._options = options or MeterOptions()
        self._lock = threading.Lock()  # what `record` touches
        self._flush_lock = threading.Lock()  # one flush at a time
        self._unjournalled: list[dict[str, Any]] = []  # journal off, or writing to it failed
        self._num_unjournalled_writing = 0  # swapped out of `_unjournalled` by a flush under way
        self._pending: deque[tuple[int, int, dict[str, Any]]] = deque()  # (start, end, row) of the active segment
        self._taken: deque[tuple[int, int, dict[str, Any]]] = deque()  # the writer's, swapped out of `_pending`
        self._is_spilled = False  # records past `_pending` are on disk only
        self._committed: dict[str, int] = {}  # segment id -> offset known to be in the database
        self._unsure: set[str] = set()  # segments whose offset must be read back from the database
        self._active: JournalSegment | None = None
        self._refusals: dict[tuple[date, str, str, str], int] = {}  # (day, project, key, reason) -> count
        self._journal = Journal(journal_dir)
        self._orphans = self._journal.adopt_orphans()
        self._unsure.update(segment.id for segment in self._orphans)
        if self._options.is_journalled:
            self._active = self._journal.create_segment()
            self._committed[self._active.id] = 0
        self._replay()
        self._wakeup = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    def check_capacity(self) -> None:
        """Refuse a new request (503) when its record could not be kept within the bounds."""
        if (
            len(self._unjournalled) + self._num_unjournalled_writing >= self._options.max_pending
            or self.backlog_bytes() >= self._options.max_journal_bytes
        ):
            raise MeteringUnavailableError(
                "new requests are paused because their usage cannot be recorded safely: the usage database has "
                "been unreachable and this server's backlog of unwritten records is full; retry later"
            )

    def backlog_bytes(self) -> int:
        """Journalled bytes not yet known to be in the database, over this process's segments."""
        segments = [*self._orphans, *([self._active] if self._active is not None else [])]
        return sum(segment.size - self._committed.get(segment.id, 0) for segment in segments)

    @property
    def num_in_memory(self) -> int:
        """Records held in memory until written (at most `max_pending`, plus requests in flight)."""
        return len(self._pending) + len(self._taken) + len(self._unjournalled) + self._num_unjournalled_writing

    def record(self, event: UsageEvent) -> None:
        """Journal one record (one write to the OS, never a database call) and queue it for the writer."""
        row = event.as_row()
        with self._lock:
            segment = self._active
            if segment is None:
                self._unjournalled.append(row)
                is_batch_full = len(self._unjournalled) == self._options.max_batch
            else:
                try:
                    start, end = segment.append(row)
                except OSError:
                    logger.exception("journalling a usage record failed; it is kept in memory until written")
                    self._unjournalled.append(row)
                    return
                if not self._is_spilled and len(self._pending) + len(self._taken) < self._options.max_pending:
                    self._pending.append((start, end, row))
                else:
                    self._is_spilled = True
                is_batch_full = len(self._pending) == self._options.max_batch
        if is_batch_full:
            self._wakeup.set()

    def count_refusal(self, project_id: str, key_id: str | None, reason: str) -> None:
        """Count a refused request (429): summed in memory, written with the next flush (no journal: a count
        lost with a killed process bills nobody)."""
        group = (now_utc().date(), project_id, key_id or "", reason[:48])
        with self._lock:
            self._refusals[group] = self._refusals.get(group, 0) + 1

    def flush(self) -> None:
        """Write everything recorded so far to the database (the writer thread calls this; `close` and tests
        may too). Raises when the database fails; nothing is lost, the next flush goes on from there."""
        with self._flush_lock:
            try:
                self._flush_unjournalled()
                for orphan in list(self._orphans):
                    self._drain(orphan, orphan.size)
                    self._orphans.remove(orphan)
                    self._retire(orphan)
                if self._active is not None:
                    self._drain(self._active, self._active.size)
                    self._rotate_if_drained(self._active)
                self._flush_refusals()
            except Exception:
                logger.exception("writing usage records failed; they are kept and retried")
                raise

    def close(self) -> None:
        """Stop the writer and write what is left; what the database cannot take now stays journalled and is
        written at the next start (what was only in memory is lost, and said so)."""
        self._closing.set()
        self._wakeup.set()
        self._thread.join(timeout=30)
        try:
            self.flush()
        except Exception:
            if self._unjournalled:
                logger.error("%d usage records held only in memory are lost: the database is unreachable",
                             len(self._unjournalled))
            if self.backlog_bytes():
                logger.error("%d bytes of usage records stay in %s and are written at the next start",
                             self.backlog_bytes(), self._journal.directory)
        for orphan in self._orphans:
            orphan.close()
        with self._lock:
            active, self._active = self._active, None
        if active is not None:
            if self._committed.get(active.id) == active.size:
                self._retire(active)
            else:
                active.close()

    def _replay(self) -> None:
        """Write what dead processes journalled, before this one serves; a database that fails now only
        delays it to the writer's next flush."""
        if not self._orphans:
            return
        num_bytes = sum(orphan.size for orphan in self._orphans)
        try:
            self.flush()
        except Exception:
            logger.warning("%d journal segments (%d bytes) of earlier processes will be written when the "
                           "database answers", len(self._orphans), num_bytes)
        else:
            logger.info("wrote the usage journal of earlier processes (%d bytes)", num_bytes)

    def _flush_unjournalled(self) -> None:
        with self._lock:
            batch, self._unjournalled = self._unjournalled, []
            self._num_unjournalled_writing = len(batch)
        if not batch:
            return
        try:
            with self._database.session() as session:
                add_usage(session, batch)
        except Exception:
            with self._lock:
                self._unjournalled[:0] = batch
            raise
        finally:
            self._num_unjournalled_writing = 0

    def _flush_refusals(self) -> None:
        with self._lock:
            counts, self._refusals = self._refusals, {}
        if not counts:
            return
        rows = [
            {"day": day, "project_id": project_id, "key_id": key_id, "reason": reason, "num_refused": count}
            for (day, project_id, key_id, reason), count in counts.items()
        ]
        try:
            with self._database.session() as session:
                add_refusals(session, rows)
        except Exception:
            with self._lock:
                for group, count in counts.items():
                    self._refusals[group] = self._refusals.get(group, 0) + count
            raise

    def _drain(self, segment: JournalSegment, target: int) -> None:
        """Write a segment's records up to byte `target`, one batch and its new offset per transaction."""
        while True:
            committed = self._committed_offset(segment)
            if committed >= target:
                return
            rows, offset = self._next_batch(segment, committed, target)
            if offset == committed:
                return  # only a torn line is left
            try:
                with self._database.session() as session:
                    add_usage(session, rows)
                    save_journal_offset(session, segment.id, offset)
            except BaseException:
                self._unsure.add(segment.id)  # the commit may have happened: ask before retrying
                raise
            self._committed[segment.id] = offset
            if segment is self._active:
                self._forget_pending(offset)

    def _committed_offset(self, segment: JournalSegment) -> int:
        if segment.id in self._unsure:
            with self._database.session() as session:
                self._committed[segment.id] = journal_offset(session, segment.id)
            self._unsure.discard(segment.id)
        return self._committed.get(segment.id, 0)

    def _next_batch(self, segment: JournalSegment, committed: int, target: int) -> tuple[list[dict[str, Any]], int]:
        """The next records after `committed`: from memory when it holds them, else read back from disk.

        The writer swaps the queue out whole (O(1) under the lock, as `record` needs that lock) and works
        on its own copy, so a large batch never holds up a request."""
        if segment is self._active:
            self._drop_taken(committed)
            if not self._taken:
                with self._lock:
                    self._taken, self._pending = self._pending, self._taken
                self._drop_taken(committed)
            if self._taken and self._taken[0][0] == committed:
                batch = list(itertools.islice(self._taken, self._options.max_batch))
                return [row for _, _, row in batch], batch[-1][1]
        records, offset = segment.read(committed, target, self._options.max_batch)
        return [row for row in map(_row_from_journal, records) if row is not None], offset

    def _drop_taken(self, offset: int) -> None:
        while self._taken and self._taken[0][1] <= offset:
            self._taken.popleft()

    def _forget_pending(self, offset: int) -> None:
        """Drop what is now in the database; once the disk-only records are too, memory takes over again."""
        self._drop_taken(offset)
        with self._lock:
            if (self._is_spilled and not self._taken and not self._pending and self._active is not None
                    and self._active.size == offset):
                self._is_spilled = False

    def _rotate_if_drained(self, active: JournalSegment) -> None:
        """Swap a big, fully written segment for a fresh one, so the journal does not grow for ever."""
        if active.size < self._options.rotate_bytes:
            return
        with self._lock:
            if self._committed.get(active.id) != active.size:
                return
            fresh = self._journal.create_segment()
            self._pending.clear()  # all of it is in the database already
            self._taken.clear()
            self._committed[fresh.id] = 0
            self._active = fresh
        self._retire(active)

    def _retire(self, segment: JournalSegment) -> None:
        """Remove a segment whose records are all in the database, then its checkpoint."""
        tail = segment.size - self._committed.pop(segment.id, 0)
        self._unsure.discard(segment.id)
        if tail > 0:
            logger.warning("skipped a torn last record (%d bytes) at the end of %s", tail, segment.path)
        segment.remove()
        try:
            with self._database.session() as session:
                forget_journal(session, segment.id)
        except Exception:  # a leftover checkpoint names a file that no longer exists: harmless
            logger.warning("could not drop the checkpoint of removed journal segment %s", segment.id)

    def _run(self) -> None:
        while not self._closing.is_set():
            self._wakeup.wait(self._options.flush_seconds)
            self._wakeup.clear()
            if self._closing.is_set():
                return  # `close` writes the rest
            try:
                self.flush()
            except Exception:  # already logged; what failed is kept for the next try
                self._closing.wait(min(5.0, self._options.flush_seconds * 10))


def _row_from_journal(record: dict[str, Any]) -> dict[str, Any] | None:
    """A journalled record as a usage row; a damaged one is skipped with a warning rather than block the rest."""
    try:
        record = {"moderation": None, **record}
        if record.keys() != _ROW_KEYS:
            raise ValueError(f"fields {sorted(record)}")
        return {**record, "created_at": datetime.fromisoformat(record["created_at"])}
    except (TypeError, ValueError) as exc:
        logger.warning("skipping a damaged usage record in the journal: %s", exc)
        return None
