"""The console's usage page for a project with a million usage records, on SQLite: how long the report
takes (daily rollups) against the same report computed from the request rows, how many SQL statements it
makes, the keys list with "last used" (one index probe per key), and then the whole pages over HTTP from a
real `galerne serve` on that database, logged in through the real login form.

    .venv/bin/python benchmarks/bench_console_usage.py                     # 1,000,000 records, 5 repeats
    .venv/bin/python benchmarks/bench_console_usage.py --records 200000 --repeats 3 --no-server

The issue's bound: the usage page of such a project loads in under a second on SQLite.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from galerne.catalog import default_catalog
from galerne.services.accounts import AccountService, ProjectSpec
from galerne.services.console import ConsoleService, Viewer
from galerne.services.models import ModelRegistry
from galerne.services.users import UserService
from galerne.storage.database import Database
from galerne.storage.tables import UsageRecord
from galerne.storage.usage import add_usage
from tests.conftest import start_server, stop_server
from tests.services.test_conversation_queries import counted
from tests.web.conftest import PASSWORD, WebUserAccount, http_login

MODELS = ("smollm2-135m-instruct", "gemma3-270m", "mistral-small")
BATCH = 20_000


def fill(database: Database, project_id: str, key_ids: list[str], num_records: int, days: int) -> float:
    """`num_records` over the last `days`, in time order as the meter writes them; seconds taken."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    start = now - timedelta(days=days)
    seconds_apart = days * 86400 / num_records
    began = time.perf_counter()
    for first in range(0, num_records, BATCH):
        rows: list[dict[str, Any]] = []
        for index in range(first, min(first + BATCH, num_records)):
            prompt, completion = rng.randint(10, 2000), rng.randint(1, 500)
            rows.append({
                "created_at": start + timedelta(seconds=index * seconds_apart), "project_id": project_id,
                "key_id": rng.choice(key_ids), "model": rng.choice(MODELS), "prompt_tokens": prompt,
                "completion_tokens": completion, "cost_micros": prompt + 3 * completion, "ttft_ms": 100,
                "duration_ms": 900, "status": "ok",
            })
        with database.session() as session:
            add_usage(session, rows)
    return time.perf_counter() - began


def from_records(database: Database, project_id: str, since: datetime) -> int:
    """The baseline: the same by-day, by-model sums over the request rows."""
    day = func.date(UsageRecord.created_at)
    query = (
        select(day, UsageRecord.model, func.count(), func.sum(UsageRecord.prompt_tokens),
               func.sum(UsageRecord.completion_tokens), func.sum(UsageRecord.cost_micros))
        .where(UsageRecord.project_id == project_id, UsageRecord.created_at >= since)
        .group_by(day, UsageRecord.model)
    )
    with database.session() as session:
        return len(session.execute(query).all())


def timed(action: Any, repeats: int) -> tuple[float, float]:
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-server", dest="server", action="store_false", help="Skip the pages over HTTP.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        database = Database.open(f"sqlite:///{Path(directory) / 'console.db'}")
        accounts = AccountService(database, default_catalog())
        project = accounts.create_project(ProjectSpec(name="busy", monthly_token_budget=10**12))
        keys = [accounts.create_key("busy", name=f"key{index}").id for index in range(5)]
        console = ConsoleService(database, accounts, ModelRegistry(default_catalog(), {}), None)
        operator = Viewer(user_id="op", label="op", is_operator=True)
        seconds = fill(database, project.id, keys, args.records, args.days)
        print(f"{args.records:,} usage records written in {seconds:.1f} s ({args.records / seconds:,.0f}/s)")
        today = datetime.now(UTC).date()
        for days in (30, 90):
            since = today - timedelta(days=days - 1)
            with counted(database) as statements:
                report = console.usage(operator, "busy", since=since, until=today)
            median, worst = timed(lambda since=since: console.usage(operator, "busy", since=since, until=today),
                                  args.repeats)
            base_median, _ = timed(
                lambda since=since: from_records(database, project.id, datetime.combine(since, datetime.min.time(),
                                                                                      UTC)), 1)
            print(f"usage report, {days} days ({report['totals']['num_requests']:,} requests): "
                  f"{median * 1000:.1f} ms median, {worst * 1000:.1f} ms worst, {len(statements)} SQL statements; "
                  f"from the request rows: {base_median * 1000:.0f} ms ({base_median / median:.0f}x)")
        median, worst = timed(lambda: console.keys(operator, "busy"), args.repeats)
        print(f"keys with last use (5 keys): {median * 1000:.1f} ms median, {worst * 1000:.1f} ms worst")
        UserService(database).create("ops@example.org", PASSWORD, is_admin=True)
        database.close()
        if args.server:
            pages(Path(directory), f"sqlite:///{Path(directory) / 'console.db'}", args.repeats)


def pages(home: Path, url: str, repeats: int) -> None:
    """GET the usage and keys pages and the chart's JSON from a real server on the filled database."""
    (home / "home").mkdir(exist_ok=True)
    server = start_server(home / "home", env={"GALERNE_DATABASE_URL": url}, start_seconds=180)
    try:
        account = WebUserAccount(email="ops@example.org", password=PASSWORD, id="", project=None)
        with http_login(server, account) as client:
            for path in ("/console/usage?project=busy", "/console/api/usage?project=busy",
                         "/console/keys?project=busy"):
                assert client.get(path).status_code == 200  # warm
                median, worst = timed(lambda path=path: client.get(path).raise_for_status(), repeats)
                print(f"GET {path}: {median * 1000:.0f} ms median, {worst * 1000:.0f} ms worst over HTTP")
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
