"""A catalogue entry served by an upstream: the gateway authenticates, limits and meters it like any model."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.databases import require_redis
from tests.upstream import Upstream, running_upstream

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("gateway")
    config = home / "catalogue.toml"
    config.write_text(
        f'[[models]]\nid = "far"\nengine = "remote"\nbase_url = "{upstream.base_url}"\nupstream_model = "up"\n'
        'api_key_env = "UPSTREAM_KEY"\ncontext_length = 8192\nprice_input_per_million = 2.0\n'
        # These tests are about what each failure becomes, not about the circuit breaker (tests/api/test_routing.py).
        "price_output_per_million = 6.0\nmax_failures = 1000\n"
        f'[[models]]\nid = "impatient"\nengine = "remote"\nbase_url = "{upstream.base_url}"\ntimeout_seconds = 0.5\n'
        "max_failures = 1000\n"
    )
    env = {"GALERNE_CONFIG": str(config), "UPSTREAM_KEY": "sk-upstream-secret", "GALERNE_USAGE_FLUSH_SECONDS": "0.1"}
    running = start_server(home, env=env)
    yield running
    stop_server(running)


def test_a_remote_model_answers_through_the_gateway(gateway: RunningServer, upstream: Upstream) -> None:
    reply = gateway.post("/v1/chat/completions", json={"model": "far", "messages": HELLO, "max_tokens": 20})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"]["content"] == "Hello from upstream ."
    assert body["usage"] == {**body["usage"], "prompt_tokens": 11, "completion_tokens": 4}
    assert upstream.headers[-1]["authorization"] == "Bearer sk-upstream-secret"
    assert "sk-upstream-secret" not in gateway.log()


def test_a_remote_stream_ends_with_usage(gateway: RunningServer) -> None:
    body = {"model": "far", "messages": HELLO, "stream": True}
    reply = gateway.post("/v1/chat/completions", json=body)
    chunks = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["completion_tokens"] == 4
    assert reply.text.rstrip().endswith("data: [DONE]")


def test_remote_usage_is_metered_at_the_catalogue_price(gateway: RunningServer) -> None:
    project = "metered"
    gateway.cli("projects", "create", project)
    key = gateway.cli("keys", "create", "--project", project)["key"]
    reply = gateway.post(
        "/v1/chat/completions", json={"model": "far", "messages": HELLO}, headers={"Authorization": f"Bearer {key}"}
    )
    assert reply.status_code == 200
    for _ in range(50):
        usage = gateway.cli("usage", "--project", project)
        if usage:
            break
    assert usage[0]["prompt_tokens"] == 11 and usage[0]["completion_tokens"] == 4
    assert usage[0]["cost"] == pytest.approx((11 * 2.0 + 4 * 6.0) / 1_000_000)


def test_tools_response_format_and_sampling_pass_through_to_the_upstream(
    gateway: RunningServer, upstream: Upstream
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {"model": "far", "messages": HELLO, "tools": tools, "tool_choice": "any", "seed": 5, "n": 2,
            "parallel_tool_calls": False}
    reply = gateway.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    [first, second] = upstream.received[-2:]  # one upstream request per choice, seeds apart
    assert first["tools"] == tools and first["tool_choice"] == "required" and first["parallel_tool_calls"] is False
    assert sorted([first["seed"], second["seed"]]) == [5, 6]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {"model": "far", "messages": HELLO, "stop": ["END"], "safe_prompt": True,
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}}}
    assert gateway.post("/v1/chat/completions", json={**body, "stop": None}).status_code == 200
    sent = upstream.received[-1]
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "s", "schema": schema,
                                                                              "strict": True}}
    assert sent["messages"][0]["role"] == "system" and "utmost utility" in sent["messages"][0]["content"]


@contextmanager
def failing(upstream: Upstream, **how: object) -> Iterator[Upstream]:
    """The shared upstream fails as `how` says for the duration of the block."""
    saved = {name: getattr(upstream, name) for name in how}
    for name, value in how.items():
        setattr(upstream, name, value)
    try:
        yield upstream
    finally:
        for name, value in saved.items():
            setattr(upstream, name, value)


def events_of(reply: httpx.Response) -> list[dict[str, Any]]:
    lines = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
    assert lines and lines[-1] == "[DONE]", reply.text
    return [json.loads(line) for line in lines[:-1]]


def test_an_upstream_5xx_is_a_502_naming_the_model_with_the_details_in_the_log(
    gateway: RunningServer, upstream: Upstream
) -> None:
    with failing(upstream, fail_with=503, fail_message="replica r7 at 10.1.2.3 is overloaded"):
        reply = gateway.post("/v1/chat/completions", json={"model": "far", "messages": HELLO})
    assert reply.status_code == 502, reply.text
    body = reply.json()
    assert (body["type"], body["code"]) == ("server_error", "upstream_error") and "'far'" in body["message"]
    assert "10.1.2.3" not in reply.text and "127.0.0.1" not in reply.text
    assert "HTTP 503: replica r7 at 10.1.2.3 is overloaded" in gateway.log()


def test_a_silent_upstream_is_a_504(gateway: RunningServer, upstream: Upstream) -> None:
    with failing(upstream, delay_seconds=2.0):
        reply = gateway.post("/v1/chat/completions", json={"model": "impatient", "messages": HELLO})
    assert reply.status_code == 504 and reply.json()["code"] == "upstream_timeout", reply.text
    assert "'impatient'" in reply.json()["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_4xx_passes_on_with_its_status_and_message(
    gateway: RunningServer, upstream: Upstream, stream: bool
) -> None:
    with failing(upstream, fail_with=429, fail_message="slow down", fail_code="rate_limited", retry_after="9"):
        reply = gateway.post("/v1/chat/completions", json={"model": "far", "messages": HELLO, "stream": stream})
    assert reply.status_code == 429, reply.text
    assert reply.json()["code"] == "rate_limited" and "slow down" in reply.json()["message"]
    assert reply.headers["retry-after"] == "9"


@pytest.mark.parametrize("fault", ["bad_chunk", "cut"])
def test_a_stream_whose_upstream_breaks_midway_ends_with_an_error_event_then_done(
    gateway: RunningServer, upstream: Upstream, fault: str
) -> None:
    with failing(upstream, fault=fault):
        reply = gateway.post("/v1/chat/completions", json={"model": "far", "messages": HELLO, "stream": True})
    assert reply.status_code == 200
    events = events_of(reply)
    assert events[1]["choices"][0]["delta"]["content"] == "Hello"  # what came before the break was sent
    last = events[-1]
    assert last["object"] == "error" and last["code"] == "upstream_error" and "'far'" in last["message"]


# A streamed "bad_chunk" or "cut" breaks after the first word: the test above.
@pytest.mark.parametrize(
    ("fault", "stream"), [("garbage", False), ("bad_chunk", False), ("cut", False), ("garbage", True)]
)
def test_an_upstream_that_breaks_before_its_first_word_is_a_502(
    gateway: RunningServer, upstream: Upstream, fault: str, stream: bool
) -> None:
    with failing(upstream, fault=fault):
        reply = gateway.post("/v1/chat/completions", json={"model": "far", "messages": HELLO, "stream": stream})
    assert reply.status_code == 502 and reply.json()["code"] == "upstream_error", reply.text


def test_two_workers_serve_a_remote_model_and_share_limits(
    upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    redis_url = require_redis()
    home = tmp_path_factory.mktemp("workers")
    config = home / "catalogue.toml"
    config.write_text(f'[[models]]\nid = "far"\nengine = "remote"\nbase_url = "{upstream.base_url}"\n')
    env = {"GALERNE_CONFIG": str(config), "GALERNE_REDIS_URL": redis_url}
    server = start_server(home, env=env, extra_args=("--workers", "2"))
    try:
        server.cli("projects", "create", "limited", "--rpm", "6")
        key = server.cli("keys", "create", "--project", "limited")["key"]
        statuses = [
            server.post("/v1/chat/completions", json={"model": "far", "messages": HELLO},
                        headers={"Authorization": f"Bearer {key}", "Connection": "close"}).status_code
            for _ in range(10)
        ]
        assert statuses.count(200) == 6 and statuses.count(429) == 4
        assert "Started parent process" in server.log()
        # Each worker builds its own app, and each hides credentials from its access log.
        for _ in range(4):
            assert server.get(f"/v1/models?api_key={key}", headers={"Connection": "close"}).status_code == 401
    finally:
        stop_server(server)
    assert server.log().count("/v1/models?api_key=[REDACTED]") == 4 and key.split(".")[1] not in server.log()


def test_a_remote_stream_forwards_each_chunk_as_it_arrives(gateway: RunningServer, upstream: Upstream) -> None:
    """The upstream sends a word every 0.2 s: the client gets each one about when it was sent, not in one burst."""
    arrivals: list[float] = []
    with failing(upstream, reply="one two three four five", words_per_second=5.0):
        body = {"model": "far", "messages": HELLO, "stream": True}
        with httpx.stream("POST", f"{gateway.base_url}/v1/chat/completions", json=body, headers=gateway.headers,
                          timeout=30) as reply:
            started = time.monotonic()
            for line in reply.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 5
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # Forwarded in one burst at the end, the gaps would be near 0; slack for a loaded machine above.
    assert all(gap > 0.08 for gap in gaps) and arrivals[-1] - arrivals[0] > 0.6, gaps


def test_an_upstream_silent_between_chunks_is_a_504(gateway: RunningServer, upstream: Upstream) -> None:
    """Headers at once, then nothing for longer than `timeout_seconds`: the idle clock, not the first-byte one."""
    with failing(upstream, words_per_second=1.0):
        reply = gateway.post("/v1/chat/completions", json={"model": "impatient", "messages": HELLO, "stream": True})
    assert reply.status_code == 504 and reply.json()["code"] == "upstream_timeout", reply.text


@pytest.mark.parametrize("field", ["api_base", "base_url", "api_key"])
def test_a_client_can_never_choose_the_upstream_or_its_key(
    gateway: RunningServer, upstream: Upstream, field: str
) -> None:
    """LiteLLM leaked provider keys through a client-supplied `api_base`: here such fields are refused unread."""
    sent = len(upstream.received)
    reply = gateway.post("/v1/chat/completions", json={"model": "far", "messages": HELLO, field: "http://10.9.9.9/v1"})
    assert reply.status_code == 422 and reply.json()["param"] == field, reply.text
    assert len(upstream.received) == sent
