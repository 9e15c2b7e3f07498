"""Two server processes sharing one PostgreSQL database and one Redis: keys, limits and usage are shared.

This is the scale-out set-up of the docs: replicas keep no state of their own, so a project's 10
requests/minute hold across both, and a key created on one works on the other.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import RunningServer, create_key, run_cli, start_server, stop_server
from tests.databases import fresh_database_url, require_redis


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, RunningServer]]:
    redis_url = require_redis()
    home = tmp_path_factory.mktemp("replicas")
    with fresh_database_url("postgresql", home) as database_url:
        env = {"GALERNE_DATABASE_URL": database_url, "GALERNE_REDIS_URL": redis_url,
               "GALERNE_USAGE_FLUSH_SECONDS": "0.1"}
        key = create_key(home, env=env)
        (home / "a").mkdir()
        (home / "b").mkdir()
        first = start_server(home / "a", env=env, api_key=key)
        try:
            second = start_server(home / "b", env=env, api_key=key)
        except BaseException:
            stop_server(first)
            raise
        yield first, second
        stop_server(first)
        stop_server(second)


async def test_two_replicas_share_one_requests_per_minute_limit(replicas: tuple[RunningServer, RunningServer]) -> None:
    first, second = replicas
    project = f"shared{uuid.uuid4().hex[:6]}"
    run_cli(first.home, "projects", "create", project, "--rpm", "10", env=first.env)
    key = run_cli(first.home, "keys", "create", "--project", project, env=first.env)["key"]
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=120) as client:
        responses = await asyncio.gather(
            *(client.post(f"{server.base_url}/v1/chat/completions", json=body) for server in (first, second) * 15)
        )
    statuses = [response.status_code for response in responses]
    # Each replica alone would admit 10 of its 15; together they admit 10 of 30.
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    for _ in range(100):
        usage = run_cli(first.home, "usage", "--project", project, env=first.env)
        if usage and usage[0]["num_requests"] == 10:
            break
        await asyncio.sleep(0.1)
    assert usage[0]["num_requests"] == 10


async def test_a_key_revoked_on_one_replica_is_refused_by_the_other_within_a_second(
    replicas: tuple[RunningServer, RunningServer],
) -> None:
    first, second = replicas
    project = f"revoked{uuid.uuid4().hex[:6]}"
    run_cli(first.home, "projects", "create", project, env=first.env)
    key = run_cli(first.home, "keys", "create", "--project", project, env=first.env)
    admin = run_cli(first.home, "keys", "create", "--admin", env=first.env)["key"]
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key['key']}"}, timeout=120) as client:
        assert (await client.post(f"{second.base_url}/v1/chat/completions", json=body)).status_code == 200
        revoked = await client.delete(f"{first.base_url}/admin/keys/{key['id']}",
                                      headers={"Authorization": f"Bearer {admin}"})
        assert revoked.status_code == 200
        revoked_at = asyncio.get_running_loop().time()
        await asyncio.sleep(1.1)  # the default key cache: one second
        refused = await client.post(f"{second.base_url}/v1/chat/completions", json=body)
        assert refused.status_code == 401, (refused.text, asyncio.get_running_loop().time() - revoked_at)
