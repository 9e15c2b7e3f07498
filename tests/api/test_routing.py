"""A model with several deployments: least-in-flight routing, retries, failover when an upstream dies under
load, circuit breaking and recovery, and what /v1/models and /metrics say about it. Real processes on
loopback: the gateway (`galerne serve`) and upstreams of their own that a test can SIGKILL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.api.test_remote_models import HELLO, failing
from tests.conftest import RunningServer, start_server, stop_server
from tests.databases import require_redis
from tests.upstream import Upstream, UpstreamProcess, running_upstream, upstream_process

TEN_WORDS = "one two three four five six seven eight nine ten"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[UpstreamProcess, UpstreamProcess]]:
    with upstream_process(words_per_second=40, reply=TEN_WORDS) as first, upstream_process(
        words_per_second=40, reply=TEN_WORDS
    ) as second:
        yield first, second


@pytest.fixture(scope="module")
def flaky() -> Iterator[Upstream]:
    with running_upstream() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(
    upstreams: tuple[UpstreamProcess, UpstreamProcess], flaky: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    first, second = upstreams
    home = tmp_path_factory.mktemp("routing")
    config = home / "catalogue.toml"
    pair = (
        f'[[models.deployments]]\nname = "a"\nengine = "remote"\nbase_url = "{first.base_url}"\n'
        f'[[models.deployments]]\nname = "b"\nengine = "vllm"\nbase_url = "{second.base_url}"\n'
    )
    config.write_text(
        # "pair" never takes a deployment out (failover alone is tested); "guarded" does after 3 failures.
        '[[models]]\nid = "pair"\nmax_failures = 1000\n' + pair
        + '[[models]]\nid = "guarded"\nhealth_check_seconds = 0.5\n' + pair +
        # One deployment that fails on demand: retries, then the circuit.
        f'[[models]]\nid = "flaky"\nengine = "remote"\nbase_url = "{flaky.base_url}"\nmax_failures = 2\n'
        "health_check_seconds = 0.3\nmax_retries = 2\n"
        f'[[models]]\nid = "once"\nengine = "remote"\nbase_url = "{flaky.base_url}"\nmax_retries = 0\n'
        "max_failures = 100\n"
    )
    running = start_server(home, env={"GALERNE_CONFIG": str(config)})
    yield running
    stop_server(running)


def metric(server: RunningServer, name: str, **labels: str) -> float:
    """One sample of /metrics (Prometheus writes labels in its own order); 0 for a counter not yet counted."""
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    for line in server.get("/metrics").text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.startswith(name + "{") and set(sample[len(name) + 1:-1].split(",")) == wanted:
            return float(value)
    return 0.0


async def test_requests_spread_over_both_deployments_by_load(gateway: RunningServer) -> None:
    async with gateway.client(timeout=30) as client:
        body = {"model": "pair", "messages": HELLO, "stream": True}
        replies = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(8)))
    assert all(reply.status_code == 200 and TEN_WORDS in _text(reply) for reply in replies)
    served = [metric(gateway, "galerne_deployment_requests_total", model="pair", deployment=name, outcome="ok")
              for name in ("a", "b")]
    # Eight requests at once, least in flight first (ties in turn): both deployments take their share.
    assert sum(served) == 8 and min(served) >= 3, served
    card = next(card for card in gateway.get("/v1/models").json()["data"] if card["id"] == "pair")
    assert card["health"] == {"status": "healthy", "num_deployments": 2, "num_healthy": 2}


def test_5xx_are_retried_before_the_first_byte_and_4xx_never(gateway: RunningServer, flaky: Upstream) -> None:
    sent = len(flaky.received)
    with failing(flaky, fail_with=503, fail_times=2):
        reply = gateway.post("/v1/chat/completions", json={"model": "flaky", "messages": HELLO})
    assert reply.status_code == 200, reply.text
    assert len(flaky.received) == sent + 3  # two 503s, then the answer
    with failing(flaky, fail_with=400, fail_message="temperature is too high", fail_times=1):
        reply = gateway.post("/v1/chat/completions", json={"model": "flaky", "messages": HELLO})
    assert reply.status_code == 400 and "temperature is too high" in reply.json()["message"]
    assert len(flaky.received) == sent + 4  # a 4xx is the answer: not tried again
    with failing(flaky, fail_with=503, fail_times=1):
        reply = gateway.post("/v1/chat/completions", json={"model": "once", "messages": HELLO})
    assert reply.status_code == 502 and reply.json()["code"] == "upstream_error"


def test_the_circuit_opens_after_failures_and_closes_when_the_upstream_answers(
    gateway: RunningServer, flaky: Upstream
) -> None:
    with failing(flaky, fail_with=500):
        statuses = [gateway.post("/v1/chat/completions", json={"model": "flaky", "messages": HELLO}).status_code
                    for _ in range(2)]
        assert statuses == [502, 502]
        sent = len(flaky.received)
        started = time.monotonic()
        refused = gateway.post("/v1/chat/completions", json={"model": "flaky", "messages": HELLO})
        assert refused.status_code == 503 and refused.json()["code"] == "engine_unavailable", refused.text
        # Answered at once, without calling the upstream.
        assert len(flaky.received) == sent and time.monotonic() - started < 1.0
        assert "retry-after" in refused.headers
        card = gateway.get("/v1/models/flaky").json()
        assert card["health"] == {"status": "down", "num_deployments": 1, "num_healthy": 0}
        assert metric(gateway, "galerne_deployment_healthy", model="flaky", deployment="remote-0") == 0
    for _ in range(50):  # the health check (every 0.3 s) brings it back
        if gateway.get("/v1/models/flaky").json()["health"]["status"] == "healthy":
            break
        time.sleep(0.1)
    reply = gateway.post("/v1/chat/completions", json={"model": "flaky", "messages": HELLO})
    assert reply.status_code == 200, reply.text
    assert "out of rotation after 2 failures" in gateway.log() and "back in rotation" in gateway.log()


def test_a_deployment_one_replica_takes_out_is_out_on_the_other(
    flaky: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two replicas sharing Redis: the second learns from the first that an upstream fails, before trying it."""
    redis_url = require_redis()
    model = f"shared{uuid.uuid4().hex[:8]}"
    home = tmp_path_factory.mktemp("replicas")
    config = home / "catalogue.toml"
    config.write_text(f'[[models]]\nid = "{model}"\nengine = "remote"\nbase_url = "{flaky.base_url}"\n'
                      "max_failures = 1\nmax_retries = 0\nhealth_check_seconds = 0.3\n")
    env = {"GALERNE_CONFIG": str(config), "GALERNE_REDIS_URL": redis_url}
    (home / "a").mkdir()
    (home / "b").mkdir()
    first = start_server(home / "a", env=env, extra_args=("--no-auth",))
    try:
        second = start_server(home / "b", env=env, extra_args=("--no-auth",))
    except BaseException:
        stop_server(first)
        raise
    body = {"model": model, "messages": HELLO}
    try:
        with failing(flaky, fail_with=500):
            assert first.post("/v1/chat/completions", json=body).status_code == 502
            assert wait_for_health(second, model, "down"), "the second replica never heard of the failure"
            sent = len(flaky.received)
            assert second.post("/v1/chat/completions", json=body).status_code == 503
            assert len(flaky.received) == sent
        assert wait_for_health(first, model, "healthy") and wait_for_health(second, model, "healthy")
        assert second.post("/v1/chat/completions", json=body).status_code == 200
        assert "because another replica found it failing" in second.log()
    finally:
        stop_server(first)
        stop_server(second)


def wait_for_health(server: RunningServer, model: str, status: str, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.get(f"/v1/models/{model}").json()["health"]["status"] == status:
            return True
        time.sleep(0.1)
    return False


async def test_killing_one_upstream_under_load_fails_no_request_that_had_not_started_on_it(
    gateway: RunningServer, upstreams: tuple[UpstreamProcess, UpstreamProcess]
) -> None:
    """16 clients in a loop; one upstream is SIGKILLed. Only requests already streaming from it may fail."""
    first, _ = upstreams
    results: list[tuple[float, bool]] = []  # (started at, succeeded)
    killed_at = 0.0
    deadline = time.monotonic() + 2.5

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            body = {"model": "pair", "messages": HELLO, "stream": True}
            reply = await client.post("/v1/chat/completions", json=body)
            results.append((started, reply.status_code == 200 and TEN_WORDS in _text(reply)))

    async def kill_later() -> None:
        nonlocal killed_at
        await asyncio.sleep(1.0)
        killed_at = time.monotonic()
        first.kill()

    async with gateway.client(timeout=30) as client:
        await asyncio.gather(kill_later(), *(client_loop(client) for _ in range(16)))
    after_kill = [ok for started, ok in results if started > killed_at]
    assert len(after_kill) >= 16 and all(after_kill), f"{after_kill.count(False)} of {len(after_kill)} failed"
    # "pair" keeps the dead deployment in rotation: every request sent to it moved to the other one.
    failed_over = metric(gateway, "galerne_deployment_requests_total", model="pair", deployment="a",
                         outcome="failed_over")
    assert failed_over >= 4 and gateway.get("/v1/models/pair").json()["health"]["status"] == "healthy"
    # "guarded" takes it out after 3 failures: its requests no longer try it, and its card says so.
    for _ in range(6):
        reply = gateway.post("/v1/chat/completions", json={"model": "guarded", "messages": HELLO, "stream": True})
        assert reply.status_code == 200 and TEN_WORDS in _text(reply)
    card = gateway.get("/v1/models/guarded").json()
    assert card["health"] == {"status": "degraded", "num_deployments": 2, "num_healthy": 1}


def _text(reply: httpx.Response) -> str:
    parts = []
    for line in reply.text.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            parts += [choice["delta"].get("content") or "" for choice in chunk.get("choices", [])]
    return "".join(parts)
