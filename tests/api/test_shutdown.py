"""SIGTERM during load: every request that finished has its usage record on disk when the process exits."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx

from galerne.storage.database import Database
from galerne.storage.usage import UsageFilter, list_usage_records
from tests.conftest import start_server


async def _stream(client: httpx.AsyncClient, index: int) -> bool:
    """True when the reply arrived whole: a finish_reason, usage, then [DONE]."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": f"Tell me fact number {index} about the sea."}],
        "max_tokens": 40,
        "stream": True,
    }
    finished = done = False
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return False
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    chunk = json.loads(line.removeprefix("data: "))
                    finished = finished or bool(chunk["choices"] and chunk["choices"][0]["finish_reason"])
    except httpx.HTTPError:
        return False
    return finished and done


async def test_sigterm_under_load_loses_no_finished_request(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"GALERNE_USAGE_FLUSH_SECONDS": "3600"})  # only the shutdown flush writes
    async with server.client(timeout=120) as client:
        tasks = [asyncio.create_task(_stream(client, index)) for index in range(24)]
        await asyncio.sleep(1.5)  # some replies are done, some running, some queued behind the 8 slots
        server.process.send_signal(signal.SIGTERM)
        outcomes = await asyncio.gather(*tasks)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says how it ended.
    assert await asyncio.to_thread(server.process.wait, 60) in (0, -signal.SIGTERM)
    assert "Waiting for application shutdown" in server.log()
    num_finished = sum(outcomes)
    assert num_finished > 0
    database = Database.open(f"sqlite:///{tmp_path / 'galerne.db'}", migrate=False)
    try:
        with database.session() as session:
            records = list_usage_records(session, UsageFilter())
    finally:
        database.close()
    # Every reply that arrived whole was recorded as "ok"; a request cut off by the shutdown may add a
    # "cancelled" or "error" record, and none is counted twice.
    assert sum(record.status == "ok" for record in records) >= num_finished
    assert len(records) <= len(outcomes)
