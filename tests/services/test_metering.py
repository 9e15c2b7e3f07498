"""The usage meter: every record journalled before `record` returns, written to the database in batches,
replayed exactly once after the process is killed, and bounded in memory and on disk while the database
is down."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from galerne.errors import MeteringUnavailableError
from galerne.services.metering import _ROW_KEYS, MeterOptions, UsageEvent, UsageMeter, UsageStatus, cost_micros
from galerne.storage.database import Database
from galerne.storage.journal import SEGMENT_SUFFIX
from galerne.storage.tables import UsageJournalCheckpoint
from galerne.storage.usage import UsageFilter, UsageGrouping, aggregate_usage, list_usage_records
from tests.databases import fresh_database_url
from tests.tcp_proxy import TcpProxy


def event(status: UsageStatus = UsageStatus.OK, prompt: int = 10, completion: int = 5) -> UsageEvent:
    return UsageEvent(
        project_id="p1", key_id="k1", model="m", prompt_tokens=prompt, completion_tokens=completion,
        cost_micros=cost_micros(prompt, completion, 0.1, 0.3), ttft_seconds=0.0123, duration_seconds=0.5,
        status=status, finished_at=datetime.now(UTC),
    )


def quiet_meter(database: Database, journal: Path, **options: int) -> UsageMeter:
    """A meter whose writer never fires on its own in a test: only `flush` and `close` write."""
    return UsageMeter(database, journal, MeterOptions(flush_seconds=3600, **options))


def num_records(database: Database) -> int:
    """Usage rows, checked against the rollups (a batch written twice or half would break the equality)."""
    with database.session() as session:
        rows = len(list_usage_records(session, UsageFilter(), limit=100_000))
        rollups = aggregate_usage(session, [], UsageFilter())
    assert rollups[0]["num_requests"] == rows
    return rows


def num_checkpoints(database: Database) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.count()).select_from(UsageJournalCheckpoint)) or 0)


def segment_files(journal: Path) -> list[Path]:
    return sorted(journal.glob(f"*{SEGMENT_SUFFIX}"))


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """The journal directory (beside, not holding, the SQLite database file)."""
    return tmp_path / "usage-journal"


def test_cost_is_exact_in_micros() -> None:
    # 1,000,000 prompt tokens at 0.1 per million and 2 completion tokens at 0.3 per million.
    assert cost_micros(1_000_000, 2, 0.1, 0.3) == 100_000 + 1


def test_the_journal_reads_back_the_fields_of_a_row() -> None:
    assert set(event().as_row()) == _ROW_KEYS


@pytest.mark.parametrize("is_journalled", [True, False], ids=["journal", "memory"])
def test_close_flushes_everything_recorded(database: Database, journal: Path, is_journalled: bool) -> None:
    meter = quiet_meter(database, journal, is_journalled=is_journalled)
    for status in (UsageStatus.OK, UsageStatus.CANCELLED, UsageStatus.ERROR):
        meter.record(event(status))
    meter.close()
    with database.session() as session:
        records = list_usage_records(session, UsageFilter(project_id="p1"))
        assert sorted(r.status for r in records) == ["cancelled", "error", "ok"]
        assert {r.ttft_ms for r in records} == {12}
        totals = aggregate_usage(session, [UsageGrouping.PROJECT], UsageFilter())
        assert totals[0]["num_requests"] == 3 and totals[0]["cost_micros"] == 3 * cost_micros(10, 5, 0.1, 0.3)
    assert list(journal.iterdir()) == []  # all written: nothing left on disk, no checkpoint left behind
    assert num_checkpoints(database) == 0


def test_the_writer_flushes_on_its_own(database: Database, journal: Path) -> None:
    meter = UsageMeter(database, journal, MeterOptions(flush_seconds=0.05))
    meter.record(event())
    deadline = datetime.now(UTC).timestamp() + 10
    count = 0
    while datetime.now(UTC).timestamp() < deadline and count == 0:
        with database.session() as session:
            count = len(list_usage_records(session, UsageFilter()))
    meter.close()
    assert count == 1


def test_each_record_is_on_disk_when_record_returns(database: Database, journal: Path) -> None:
    meter = quiet_meter(database, journal)
    meter.record(event(prompt=7))
    (segment,) = segment_files(journal)
    assert b'"prompt_tokens":7' in segment.read_bytes()
    meter.close()


_KILLED_PROCESS = textwrap.dedent("""
    import os, signal, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from galerne.services.metering import MeterOptions, UsageEvent, UsageMeter, UsageStatus
    from galerne.storage.database import Database
    from galerne.storage.journal import SEGMENT_SUFFIX

    url, journal, num_flushed, num_unflushed, ending = sys.argv[1:]
    meter = UsageMeter(Database.open(url), Path(journal), MeterOptions(flush_seconds=3600))
    def record(n):
        for _ in range(n):
            meter.record(UsageEvent("p1", "k1", "m", 10, 5, 2, 0.01, 0.5, UsageStatus.OK, datetime.now(UTC)))
    record(int(num_flushed))
    meter.flush()                   # in the database, with its checkpoint
    record(int(num_unflushed))      # journalled only
    if ending == "torn":            # killed in the middle of writing a line
        (segment,) = Path(journal).glob("*" + SEGMENT_SUFFIX)
        with segment.open("ab") as raw:
            raw.write(b'{"created_at":"2026-11-29T10:00:00+00:00","project_id":"p1","key_')
    os.kill(os.getpid(), signal.SIGKILL)
""")


def run_killed_process(
    database: Database, journal: Path, num_flushed: int, num_unflushed: int, ending: str = ""
) -> None:
    """Record in a separate process that is then SIGKILLed: no `close`, no flush, no clean-up of any kind."""
    url = database.engine.url.render_as_string(hide_password=False)
    arguments = [url, str(journal), str(num_flushed), str(num_unflushed), ending or "-"]
    result = subprocess.run([sys.executable, "-c", _KILLED_PROCESS, *arguments], capture_output=True, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()


def test_a_killed_process_loses_nothing_and_replay_bills_once(database: Database, journal: Path) -> None:
    # Killed after a batch and its checkpoint were committed (but before its segment was removed), with
    # more records journalled only: replay adds exactly those, however often it runs.
    run_killed_process(database, journal, num_flushed=5, num_unflushed=11)
    assert num_records(database) == 5
    meter = quiet_meter(database, journal, max_batch=4)  # read back in several batches
    assert num_records(database) == 16  # written at start, before the meter takes records
    meter.close()
    quiet_meter(database, journal).close()
    assert num_records(database) == 16
    assert list(journal.iterdir()) == []
    assert num_checkpoints(database) == 0


def test_a_kill_right_after_a_commit_is_not_billed_twice(database: Database, journal: Path) -> None:
    run_killed_process(database, journal, num_flushed=6, num_unflushed=0)
    assert len(segment_files(journal)) == 1  # everything in the database, the segment still on disk
    quiet_meter(database, journal).close()
    assert num_records(database) == 6


def test_a_commit_whose_answer_was_lost_is_not_written_again(database: Database, journal: Path) -> None:
    meter = quiet_meter(database, journal)
    for _ in range(3):
        meter.record(event())
    lost: list[bool] = []

    def lose_the_answer(_: Session) -> None:  # the database committed; the writer hears of a failure
        if not lost:
            lost.append(True)
            raise OperationalError("COMMIT", {}, ConnectionError("connection lost"))

    sqlalchemy_events.listen(Session, "after_commit", lose_the_answer)
    try:
        with pytest.raises(OperationalError):
            meter.flush()
    finally:
        sqlalchemy_events.remove(Session, "after_commit", lose_the_answer)
    assert num_records(database) == 3
    meter.flush()  # reads the checkpoint back instead of writing the batch again
    meter.close()
    assert num_records(database) == 3


def test_a_torn_last_line_is_skipped(database: Database, journal: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_killed_process(database, journal, num_flushed=0, num_unflushed=4, ending="torn")
    with caplog.at_level(logging.WARNING, logger="galerne.services.metering"):
        meter = quiet_meter(database, journal)
    assert num_records(database) == 4
    assert "torn last record" in caplog.text
    meter.close()
    assert list(journal.iterdir()) == []


def test_a_live_meter_keeps_its_journal_to_itself(database: Database, journal: Path) -> None:
    first = quiet_meter(database, journal)
    first.record(event())
    first.record(event())
    second = quiet_meter(database, journal)  # as another worker starting on the same GALERNE_HOME
    assert num_records(database) == 0
    second.record(event())
    second.close()
    first.close()
    assert num_records(database) == 3


def test_a_drained_segment_is_replaced_so_the_journal_stays_small(database: Database, journal: Path) -> None:
    meter = quiet_meter(database, journal, rotate_bytes=1000)
    for _ in range(8):
        meter.record(event())
    (first,) = segment_files(journal)
    assert first.stat().st_size > 1000
    meter.flush()
    (second,) = segment_files(journal)
    assert second != first and second.stat().st_size == 0
    assert num_checkpoints(database) == 0
    meter.record(event())
    meter.close()
    assert num_records(database) == 9


@pytest.fixture
def proxied_postgres(tmp_path: Path) -> Iterator[tuple[Database, TcpProxy]]:
    """A real PostgreSQL database reached through a proxy the test can cut."""
    with fresh_database_url("postgresql", tmp_path) as url, TcpProxy(5432) as proxy:
        database = Database.open(make_url(url).set(port=proxy.port).render_as_string(hide_password=False))
        yield database, proxy
        database.close()


def test_database_down_records_wait_on_disk_beyond_the_memory_bound(
    proxied_postgres: tuple[Database, TcpProxy], tmp_path: Path
) -> None:
    database, proxy = proxied_postgres
    meter = quiet_meter(database, tmp_path / "journal", max_pending=3, max_batch=2)
    meter.record(event())
    meter.flush()
    proxy.cut()
    for _ in range(10):
        meter.record(event())
    with pytest.raises(OperationalError):
        meter.flush()
    assert meter.num_in_memory == 3  # the other 7 are on disk only
    assert meter.backlog_bytes() > 0
    meter.record(event())
    assert meter.num_in_memory == 3
    proxy.restore()
    meter.flush()  # read back from the journal, two at a time
    assert num_records(database) == 12
    assert meter.backlog_bytes() == 0
    meter.record(event())  # caught up: memory takes over again
    assert meter.num_in_memory == 1
    meter.close()
    assert num_records(database) == 13


def test_database_down_at_shutdown_records_wait_for_the_next_start(
    proxied_postgres: tuple[Database, TcpProxy], tmp_path: Path
) -> None:
    database, proxy = proxied_postgres
    meter = quiet_meter(database, tmp_path)
    proxy.cut()
    for _ in range(3):
        meter.record(event())
    meter.close()  # logs that they stay journalled
    assert len(segment_files(tmp_path)) == 1
    proxy.restore()
    quiet_meter(database, tmp_path).close()
    assert num_records(database) == 3


def test_past_the_journal_bound_new_requests_are_refused_until_the_database_is_back(
    proxied_postgres: tuple[Database, TcpProxy], tmp_path: Path
) -> None:
    database, proxy = proxied_postgres
    meter = quiet_meter(database, tmp_path, max_journal_bytes=2000)
    proxy.cut()
    num_admitted = 0
    while True:
        try:
            meter.check_capacity()
        except MeteringUnavailableError as exc:
            assert exc.status == 503 and exc.headers()["Retry-After"]
            break
        meter.record(event())
        num_admitted += 1
        assert num_admitted < 100
    assert 2000 <= meter.backlog_bytes() < 2000 + 400
    meter.record(event())  # a request admitted before the bound was reached still records
    proxy.restore()
    meter.flush()
    meter.check_capacity()
    meter.close()
    assert num_records(database) == num_admitted + 1


def test_without_a_journal_memory_is_the_bound(proxied_postgres: tuple[Database, TcpProxy], tmp_path: Path) -> None:
    database, proxy = proxied_postgres
    meter = quiet_meter(database, tmp_path, is_journalled=False, max_pending=4)
    proxy.cut()
    for _ in range(4):
        meter.check_capacity()
        meter.record(event())
    with pytest.raises(OperationalError):
        meter.flush()
    with pytest.raises(MeteringUnavailableError):
        meter.check_capacity()
    proxy.restore()
    meter.flush()
    meter.check_capacity()
    meter.close()
    assert num_records(database) == 4
    assert list(tmp_path.iterdir()) == []


def test_turning_the_journal_off_still_replays_what_was_journalled(database: Database, journal: Path) -> None:
    run_killed_process(database, journal, num_flushed=0, num_unflushed=3)
    meter = quiet_meter(database, journal, is_journalled=False)
    assert num_records(database) == 3
    meter.record(event())
    meter.close()
    assert num_records(database) == 4
    assert list(journal.iterdir()) == []
