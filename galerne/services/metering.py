"""Usage records: one per request, buffered in memory and written in batches by a background thread.

The request path only appends to a list, so a slow database never slows a reply. The writer flushes
every `flush_seconds` and once more when the server stops (uvicorn turns SIGTERM into a graceful
shutdown, which runs `close`), so a finished request's record is never lost to a normal stop. A batch
that fails to write is kept and retried at the next flush.

Example::

    meter = UsageMeter(database)
    meter.record(UsageEvent(project_id="p1", key_id="k1", model="smollm2", prompt_tokens=12, ...))
    meter.close()   # flushes what is left
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from galerne.storage.database import Database
from galerne.storage.usage import add_usage

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
        }


def cost_micros(prompt_tokens: int, completion_tokens: int, input_per_million: float, output_per_million: float) -> int:
    """Price per million tokens is exactly millionths of the currency unit per token."""
    return round(prompt_tokens * input_per_million + completion_tokens * output_per_million)


def now_utc() -> datetime:
    return datetime.now(UTC)


class UsageMeter:
    def __init__(self, database: Database, *, flush_seconds: float = 0.5, max_batch: int = 5000) -> None:
        self._database = database
        self._flush_seconds = flush_seconds
        self._max_batch = max_batch
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._is_closing = False
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    def record(self, event: UsageEvent) -> None:
        """Queue one record; never blocks on the database."""
        with self._lock:
            self._pending.append(event.as_row())
            if len(self._pending) >= self._max_batch:
                self._wakeup.set()

    def flush(self) -> None:
        """Write everything queued so far (the writer thread calls this; tests and `close` may too)."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            with self._database.session() as session:
                add_usage(session, batch)
        except Exception:
            logger.exception("writing %d usage records failed; they will be retried", len(batch))
            with self._lock:
                self._pending[:0] = batch
            raise

    def close(self) -> None:
        """Stop the writer and flush what is left, so a graceful stop loses nothing."""
        self._is_closing = True
        self._wakeup.set()
        self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._is_closing:
            self._wakeup.wait(self._flush_seconds)
            self._wakeup.clear()
            try:
                self.flush()
            except Exception:  # already logged; the batch is kept for the next try
                self._wakeup.wait(min(5.0, self._flush_seconds * 10))
