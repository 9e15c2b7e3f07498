"""Usage storage at scale: bytes per usage record, write rate, and how long a report takes from the daily
rollups against the same report computed from the request rows, in one run.

    .venv/bin/python benchmarks/bench_usage.py                       # 1,000,000 records in SQLite
    .venv/bin/python benchmarks/bench_usage.py --records 200000 --database-url postgresql+psycopg://postgres@127.0.0.1/test

LiteLLM's spend log reached 26 GB at 5.9M rows and its spend queries took seconds (BerriAI/litellm#41499,
#2169); the baseline here is the naive query over the request rows, grouped the same way.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from galerne.storage.database import Database
from galerne.storage.tables import UsageRecord
from galerne.storage.usage import UsageFilter, UsageGrouping, add_usage, aggregate_usage

NUM_PROJECTS, NUM_KEYS_PER_PROJECT, MODELS = 20, 5, ("smollm2", "mistral-small", "mistral-large")


def synthetic_batch(
    first: int, size: int, total: int, start: datetime, days: int, rng: random.Random
) -> list[dict[str, Any]]:
    """Records `first`..`first + size` of `total` spread evenly over `days`, in time order, as the meter
    writes them (a batch covers a short stretch of time)."""
    rows = []
    seconds_apart = days * 86400 / total
    for index in range(first, first + size):
        project = rng.randrange(NUM_PROJECTS)
        prompt, completion = rng.randint(10, 2000), rng.randint(1, 500)
        rows.append({
            "created_at": start + timedelta(seconds=index * seconds_apart),
            "project_id": f"project{project:04d}",
            "key_id": f"key{project:04d}{rng.randrange(NUM_KEYS_PER_PROJECT)}",
            "model": rng.choice(MODELS),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_micros": prompt + 3 * completion,
            "ttft_ms": rng.randint(20, 900),
            "duration_ms": rng.randint(100, 20000),
            "status": "ok",
        })
    return rows


def report_from_records(database: Database, project_id: str, since: date) -> list[tuple[Any, ...]]:
    """The baseline: the same per-model, per-day report, grouped over the request rows."""
    day = func.date(UsageRecord.created_at)
    query = (
        select(UsageRecord.model, day, func.count(), func.sum(UsageRecord.prompt_tokens),
               func.sum(UsageRecord.completion_tokens), func.sum(UsageRecord.cost_micros))
        .where(UsageRecord.project_id == project_id,
               UsageRecord.created_at >= datetime(since.year, since.month, since.day, tzinfo=UTC))
        .group_by(UsageRecord.model, day)
    )
    with database.session() as session:
        return [tuple(row) for row in session.execute(query)]


def timed(action: Any, repeats: int = 5) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return sorted(timings)[len(timings) // 2]


def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="galerne-bench-usage-"))
    url = args.database_url or f"sqlite:///{work / 'usage.db'}"
    database = Database.open(url)
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    began = time.perf_counter()
    for written in range(0, args.records, args.batch):
        with database.session() as session:
            size = min(args.batch, args.records - written)
            add_usage(session, synthetic_batch(written, size, args.records, start, args.days, rng))
    write_seconds = time.perf_counter() - began
    print(f"wrote {args.records:,} usage records in batches of {args.batch:,}: {args.records / write_seconds:,.0f} "
          f"records/s (rows and rollups in one transaction per batch)")
    if url.startswith("sqlite"):
        size = (work / "usage.db").stat().st_size + sum(p.stat().st_size for p in work.glob("usage.db-*"))
        print(f"database file: {size / 1e6:,.1f} MB, {size / args.records:,.0f} bytes per record "
              "(rows, rollups and indexes)")
    since = (start + timedelta(days=args.days // 2)).date()

    def from_rollups() -> Any:
        with database.session() as session:
            return aggregate_usage(session, [UsageGrouping.MODEL, UsageGrouping.DAY],
                                   UsageFilter(project_id="project0003", since=since))

    def all_projects() -> Any:
        with database.session() as session:
            return aggregate_usage(session, [UsageGrouping.PROJECT, UsageGrouping.MODEL], UsageFilter())

    rollup = timed(from_rollups)
    baseline = timed(lambda: report_from_records(database, "project0003", since))
    everything = timed(all_projects)
    print(f"one project, by model and day, last {args.days - args.days // 2} days:")
    print(f"  from daily rollups:   {rollup * 1000:8.2f} ms")
    print(f"  from request rows:    {baseline * 1000:8.2f} ms   (baseline)")
    print(f"  speed-up:             {baseline / rollup:8.1f}x")
    print(f"all projects by model, whole period, from rollups: {everything * 1000:.2f} ms")
    database.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=90, help="The records spread over this many days.")
    parser.add_argument("--database-url", help="Default: a fresh SQLite file in a temporary directory.")
    return parser


if __name__ == "__main__":
    main(build_parser().parse_args())
