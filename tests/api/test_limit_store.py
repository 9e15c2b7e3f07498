"""The gateway and its Redis limit store through a real TCP proxy that the tests cut and restore.

A Redis blip while requests finish must not hold their concurrency places (it held them ≈15 minutes);
while Redis is away clients get a 503 that names no host, the log says where, and `/health` says which
part is down. The model is remote, served by a slow local upstream, so requests last long enough to
be cut mid-way without loading weights.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import RunningServer, create_key, free_port, start_server, stop_server
from tests.proxy import TcpProxy, running_proxy
from tests.upstream import Upstream, running_upstream

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
HELLO = [{"role": "user", "content": "Say hello."}]
REPLY = " ".join(f"word{index}" for index in range(20))  # 2 s at 10 words per second


def require_redis() -> None:
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        message = f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def remote_env(home: Path, upstream: Upstream, redis_url: str) -> dict[str, str]:
    config = home / "catalogue.toml"
    config.write_text(f'[[models]]\nid = "far"\nengine = "remote"\nbase_url = "{upstream.base_url}"\n')
    return {"GALERNE_CONFIG": str(config), "GALERNE_REDIS_URL": redis_url}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    require_redis()
    with running_upstream(Upstream(reply=REPLY, words_per_second=10)) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(upstream: Upstream) -> Iterator[TcpProxy]:
    with running_proxy(REDIS_HOST, REDIS_PORT) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(
    upstream: Upstream, proxy: TcpProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("limit-store")
    running = start_server(home, env=remote_env(home, upstream, f"redis://127.0.0.1:{proxy.port}/0"))
    yield running
    stop_server(running)


async def read_lines(response: httpx.Response, lines: list[str], started: asyncio.Event) -> None:
    """Append the stream's lines to `lines`, setting `started` once the first has come."""
    async for line in response.aiter_lines():
        lines.append(line)
        started.set()


async def test_a_redis_blip_while_requests_finish_does_not_lock_the_project_out(
    gateway: RunningServer, proxy: TcpProxy
) -> None:
    key = create_key(gateway.home, project="blip", env=gateway.env, concurrency="2")
    body = {"model": "far", "messages": HELLO, "stream": True}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=60) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as first, \
                client.stream("POST", "/v1/chat/completions", json=body) as second:
            assert first.status_code == second.status_code == 200
            lines: list[list[str]] = [[], []]
            starts = [asyncio.Event(), asyncio.Event()]
            reading = asyncio.gather(*(read_lines(r, lines[i], starts[i]) for i, r in enumerate((first, second))))
            await asyncio.wait_for(asyncio.gather(*(started.wait() for started in starts)), 10)
            await asyncio.to_thread(proxy.cut)  # Redis goes away while both requests still run
            num_lines_at_cut = [len(stream) for stream in lines]
            await reading
        # Both ran on, and ended, during the cut: their releases met an unreachable Redis.
        assert all(len(stream) > num + 10 for stream, num in zip(lines, num_lines_at_cut, strict=True)), lines
        assert all([line for line in stream if line][-1] == "data: [DONE]" for stream in lines)

        refused = await client.post("/v1/chat/completions", json={**body, "stream": False})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        error = refused.json()
        assert error["code"] == "rate_limit_store_unavailable" and error["type"] == "server_error"
        assert "127.0.0.1" not in refused.text and str(proxy.port) not in refused.text and "Error" not in refused.text
        assert f"redis://127.0.0.1:{proxy.port}/0 is unreachable" in gateway.log()  # the operator is told where
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["limit_store"] == "down" and health.json()["down"] == ["limit_store"]

        await asyncio.to_thread(proxy.restore)
        statuses = []
        for _ in range(50):  # within 5 s, not 15 minutes
            reply = await client.post("/v1/chat/completions", json={**body, "stream": False})
            statuses.append(reply.status_code)
            if reply.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert statuses[-1] == 200, statuses
        assert (await client.get("/health")).status_code == 200


def test_a_start_without_redis_warns_and_health_names_the_limit_store(
    upstream: Upstream, tmp_path: Path
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    server = start_server(tmp_path, env=remote_env(tmp_path, upstream, nowhere), health_status=503)
    try:
        log = server.log()
        assert "starting without the rate-limit store" in log and f"{nowhere} is unreachable" in log
        anonymous = httpx.get(f"{server.base_url}/health", timeout=10)
        assert anonymous.json() == {
            "status": "unavailable", "database": "ok", "limit_store": "down", "engines": "ok", "down": ["limit_store"]
        }
        assert "far" not in anonymous.text and "6379" not in anonymous.text
        with_key = server.get("/health").json()
        assert with_key["models"]["far"]["status"] == "ok"
    finally:
        stop_server(server)
