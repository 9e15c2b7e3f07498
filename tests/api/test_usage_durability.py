"""Usage records outlive the server: SIGKILL right after answers, and a database that goes away.

A real `galerne serve` on the bundled model, real HTTP, real SQLite (and real PostgreSQL behind a proxy
that the test cuts). Records are counted per key; every answered request must have one, and a restart must
not bill anything twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import func, literal, select, union_all
from sqlalchemy.engine import make_url

from galerne.storage.database import Database
from galerne.storage.journal import SEGMENT_SUFFIX
from galerne.storage.tables import UsageDaily, UsageRecord
from tests.conftest import RunningServer, run_cli, start_server, stop_server
from tests.databases import fresh_database_url
from tests.tcp_proxy import TcpProxy
from tests.upstream import running_upstream

NUM_ROUNDS = 10
NUM_CLIENTS = 8
REDIS_URL = "redis://127.0.0.1:6379/0"


def records_by_key(database_url: str) -> Counter[str]:
    """Usage rows per key id, checked against the daily rollups.

    Both counts come from one statement, hence one snapshot: a live server's writer commits between two
    separate SELECTs (SQLite starts no read transaction for them), which would make them disagree."""
    records = select(literal("record").label("kind"), UsageRecord.key_id, func.count().label("n")).group_by(
        UsageRecord.key_id)
    daily = select(literal("daily").label("kind"), UsageDaily.key_id, func.sum(UsageDaily.num_requests)).group_by(
        UsageDaily.key_id)
    database = Database.open(database_url, migrate=False)
    try:
        with database.session() as session:
            counted = list(session.execute(union_all(records, daily)))
    finally:
        database.close()
    rows = Counter({key: int(n) for kind, key, n in counted if kind == "record"})
    rollups = {key: int(n) for kind, key, n in counted if kind == "daily"}
    assert rollups == dict(rows)
    return rows


class Load:
    """Clients sending chat completions (streamed and not) back to back, and what they sent and got whole."""

    def __init__(self, server: RunningServer, keys: dict[str, str], model: str = "smollm2") -> None:
        self.server = server
        self.keys = keys  # key id -> key
        self.model = model
        self.sent: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.num_answered = 0
        self.is_stopping = False

    async def run_until_killed(self, kill_after: int, pids: list[int] | None = None) -> None:
        """SIGKILL `pids` (default: the server) the moment the `kill_after`-th answer has arrived whole;
        the clients stop after what they are sending then."""
        async with httpx.AsyncClient(base_url=self.server.base_url, timeout=60) as client:
            key_ids = sorted(self.keys)
            await asyncio.gather(*(
                self._client(client, key_ids[index % len(key_ids)], is_streamed=index % 4 < 2, index=index,
                             kill_after=kill_after, pids=pids or [self.server.process.pid])
                for index in range(NUM_CLIENTS)
            ))

    async def _client(self, client: httpx.AsyncClient, key_id: str, *, is_streamed: bool, index: int,
                      kill_after: int, pids: list[int]) -> None:
        headers = {"Authorization": f"Bearer {self.keys[key_id]}"}
        for turn in range(1000):
            if self.is_stopping:
                return
            body = {"model": self.model, "max_tokens": 3 + (index + turn) % 5, "stream": is_streamed,
                    "messages": [{"role": "user", "content": f"Name a colour ({index}.{turn})."}]}
            self.sent[key_id] += 1
            try:
                is_whole = await (self._stream(client, body, headers) if is_streamed
                                  else self._complete(client, body, headers))
            except httpx.HTTPError:
                return  # the server (or the worker holding this connection) is gone
            if not is_whole:
                return
            self.answered[key_id] += 1
            self.num_answered += 1
            if self.num_answered == kill_after:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                self.is_stopping = True

    async def _complete(self, client: httpx.AsyncClient, body: dict[str, object], headers: dict[str, str]) -> bool:
        response = await client.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return bool(response.json()["usage"]["total_tokens"])

    async def _stream(self, client: httpx.AsyncClient, body: dict[str, object], headers: dict[str, str]) -> bool:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    return True
        return False


@pytest.mark.timeout(1500)  # eleven server starts: about 1 min on 2 quiet cores, 8 min on busy ones
def test_sigkill_right_after_answers_loses_no_record(tmp_path: Path) -> None:
    """SIGKILL within microseconds of the k-th whole answer, restart on the same home, find every answer's
    record; ten rounds, half with the default writer period, half with a writer busy all the time (so some
    kills land in the middle of a database commit)."""
    home = tmp_path
    url = f"sqlite:///{home / 'galerne.db'}"
    run_cli(home, "projects", "create", "durable")
    created = [run_cli(home, "keys", "create", "--project", "durable") for _ in range(2)]
    keys = {str(key["id"]): str(key["key"]) for key in created}
    sent: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    rng = random.Random(9)
    server = start_server(home, api_key=created[0]["key"])
    try:
        for round_index in range(NUM_ROUNDS):
            load = Load(server, keys)
            asyncio.run(load.run_until_killed(kill_after=rng.randint(2, 14)))
            assert server.process.wait(timeout=30) == -signal.SIGKILL, "the load ended before the kill"
            sent += load.sent
            answered += load.answered
            flush_seconds = "0.5" if round_index % 2 == 0 else "0.01"
            server = start_server(home, api_key=created[0]["key"], env={"GALERNE_USAGE_FLUSH_SECONDS": flush_seconds})
            recorded = records_by_key(url)  # the journal is replayed before the server reports healthy
            for key_id in keys:
                assert answered[key_id] <= recorded[key_id] <= sent[key_id], (
                    f"round {round_index}, key {key_id}: {answered[key_id]} answered, {recorded[key_id]} recorded, "
                    f"{sent[key_id]} sent"
                )
    finally:
        stop_server(server)
    assert sum(answered.values()) >= 2 * NUM_ROUNDS
    assert list((home / "usage-journal").glob(f"*{SEGMENT_SUFFIX}")) == []  # all written, nothing left


def wait_for_records(database_url: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while (found := records_by_key(database_url).total()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert found == count


def chat(server: RunningServer) -> httpx.Response:
    body = {"model": "smollm2", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
    return server.post("/v1/chat/completions", json=body)


def test_database_down_requests_are_journalled_then_refused_past_the_bound(tmp_path: Path) -> None:
    home = tmp_path
    with fresh_database_url("postgresql", tmp_path) as direct_url, TcpProxy(5432) as proxy:
        proxied_url = make_url(direct_url).set(port=proxy.port).render_as_string(hide_password=False)
        env = {
            "GALERNE_DATABASE_URL": proxied_url,
            "GALERNE_KEY_CACHE_SECONDS": "3600",  # keys are checked once, while the database is up
            "GALERNE_USAGE_FLUSH_SECONDS": "0.1",
            "GALERNE_USAGE_MAX_PENDING": "2",
            "GALERNE_USAGE_JOURNAL_MAX_BYTES": "4096",
        }
        server = start_server(home, env=env)
        try:
            assert chat(server).status_code == 200
            wait_for_records(direct_url, 1)
            proxy.cut()
            num_answered = 0
            while (response := chat(server)).status_code == 200:
                num_answered += 1
                assert num_answered < 100, "never refused"
            assert response.status_code == 503
            assert int(response.headers["Retry-After"]) > 0
            error = response.json()
            assert (error["object"], error["type"], error["code"]) == ("error", "server_error", "metering_unavailable")
            assert str(proxy.port) not in error["message"] and "127.0.0.1" not in error["message"]
            journalled = b"".join(path.read_bytes() for path in (home / "usage-journal").glob(f"*{SEGMENT_SUFFIX}"))
            assert journalled.count(b"\n") >= num_answered >= 10
            assert records_by_key(direct_url).total() == 1
            proxy.restore()
            wait_for_records(direct_url, 1 + num_answered)  # the writer retries every 1 s (10 times its period)
            assert chat(server).status_code == 200
        finally:
            stop_server(server)
        assert records_by_key(direct_url).total() == 2 + num_answered


def worker_pids(parent: int, count: int) -> list[int]:
    """The uvicorn worker processes of a `serve --workers` parent, once `count` of them are running."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        workers = [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        if len(workers) == count:
            return workers
        time.sleep(0.1)
    raise AssertionError(f"{parent} has not {count} workers")


def test_workers_replay_only_the_journals_of_dead_workers(tmp_path: Path) -> None:
    """`serve --workers 2`: a killed worker's replacement replays its journal while the other worker keeps
    its own; then everything is SIGKILLed and a restart replays both."""
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    home = tmp_path
    url = f"sqlite:///{home / 'galerne.db'}"
    with running_upstream() as upstream:
        config = home / "catalogue.toml"
        config.write_text(f'[[models]]\nid = "relay"\nengine = "remote"\nbase_url = "{upstream.base_url}"\n'
                          "context_length = 4096\n")
        run_cli(home, "projects", "create", "workers")
        created = run_cli(home, "keys", "create", "--project", "workers")
        keys = {str(created["id"]): str(created["key"])}
        arguments = {"config": config, "api_key": str(created["key"]), "extra_args": ("--workers", "2"),
                     "env": {"GALERNE_REDIS_URL": REDIS_URL}}
        server = start_server(home, **arguments)  # type: ignore[arg-type]
        try:
            first, second = worker_pids(server.process.pid, 2)
            load = Load(server, keys, model="relay")
            asyncio.run(load.run_until_killed(kill_after=40, pids=[first]))
            replacement = next(pid for pid in worker_pids(server.process.pid, 2) if pid != second)
            assert replacement != first
            key_id = next(iter(keys))
            deadline = time.monotonic() + 60  # the replacement replays as it starts; the other flushes in 0.5 s
            while (recorded := records_by_key(url)[key_id]) < load.answered[key_id] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert load.answered[key_id] <= recorded <= load.sent[key_id]
            again = Load(server, keys, model="relay")
            workers = worker_pids(server.process.pid, 2)
            asyncio.run(again.run_until_killed(kill_after=40, pids=[server.process.pid, *workers]))
            server.process.wait(timeout=30)
        finally:
            stop_server(server)
        server = start_server(home, **arguments)  # type: ignore[arg-type]
        stop_server(server)
    recorded = records_by_key(url)[key_id]
    assert load.answered[key_id] + again.answered[key_id] <= recorded <= load.sent[key_id] + again.sent[key_id]
    assert list((home / "usage-journal").glob(f"*{SEGMENT_SUFFIX}")) == []
