"""The usage writer: records are buffered off the request path, written in batches, never lost on close."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from galerne.services.metering import UsageEvent, UsageMeter, UsageStatus, cost_micros
from galerne.storage.database import Database
from galerne.storage.usage import UsageFilter, UsageGrouping, aggregate_usage, list_usage_records


def event(status: UsageStatus = UsageStatus.OK, prompt: int = 10, completion: int = 5) -> UsageEvent:
    return UsageEvent(
        project_id="p1", key_id="k1", model="m", prompt_tokens=prompt, completion_tokens=completion,
        cost_micros=cost_micros(prompt, completion, 0.1, 0.3), ttft_seconds=0.0123, duration_seconds=0.5,
        status=status, finished_at=datetime.now(UTC),
    )


def test_cost_is_exact_in_micros() -> None:
    # 1,000,000 prompt tokens at 0.1 per million and 2 completion tokens at 0.3 per million.
    assert cost_micros(1_000_000, 2, 0.1, 0.3) == 100_000 + 1


def test_close_flushes_everything_recorded(database: Database) -> None:
    meter = UsageMeter(database, flush_seconds=3600)  # the periodic flush never fires in this test
    for status in (UsageStatus.OK, UsageStatus.CANCELLED, UsageStatus.ERROR):
        meter.record(event(status))
    meter.close()
    with database.session() as session:
        records = list_usage_records(session, UsageFilter(project_id="p1"))
        assert sorted(r.status for r in records) == ["cancelled", "error", "ok"]
        assert {r.ttft_ms for r in records} == {12}
        totals = aggregate_usage(session, [UsageGrouping.PROJECT], UsageFilter())
        assert totals[0]["num_requests"] == 3 and totals[0]["cost_micros"] == 3 * cost_micros(10, 5, 0.1, 0.3)


def test_the_writer_flushes_on_its_own(database: Database) -> None:
    meter = UsageMeter(database, flush_seconds=0.05)
    meter.record(event())
    deadline = datetime.now(UTC).timestamp() + 10
    count = 0
    while datetime.now(UTC).timestamp() < deadline and count == 0:
        with database.session() as session:
            count = len(list_usage_records(session, UsageFilter()))
    meter.close()
    assert count == 1


def test_a_failed_batch_is_kept_and_written_later(database: Database, monkeypatch) -> None:
    meter = UsageMeter(database, flush_seconds=3600)
    meter.record(event())
    real_session = database.session

    def broken():
        raise RuntimeError("database down")

    monkeypatch.setattr(database, "session", broken)
    with contextlib.suppress(RuntimeError):
        meter.flush()
    monkeypatch.setattr(database, "session", real_session)
    meter.record(event())
    meter.close()
    with database.session() as session:
        assert len(list_usage_records(session, UsageFilter())) == 2
