"""Every schema of the corpus, decoded by the real model at temperature 0 and 0.8, gives valid JSON.

The corpus (`schemas.json`, 188 hand-written schemas checked by `check_corpus.py`) bounds its strings
and arrays so that a reply always ends. A reply may still ramble up to `max_tokens` (the deepest schemas
allow ~3000 characters); the engine then closes the structure within the budget, so a `length` reply
must be valid too. The four open objects (`additionalProperties` true or a schema) have no bound the
closer can walk, so for them only a `stop` reply is checked (a `length` one is documented as possibly
incomplete).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.conftest import RunningServer

CORPUS: list[dict[str, Any]] = json.loads((Path(__file__).parent / "schemas.json").read_text())
OPEN_ENDED = {"cache_entry_metadata", "http_headers_map", "event_metadata_open", "plugin_settings_open"}
# Measured on SmolLM2 (greedy and at 0.8): the longest reply that ends by itself is 613 tokens; a rambling one
# runs to the budget, and at 1,500 tokens it alone took 300 s on a quiet machine and over 600 s in CI.
MAX_TOKENS = 640
CONCURRENCY = 8


def test_the_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 100
    assert len({entry["name"] for entry in CORPUS}) == len(CORPUS)
    text = json.dumps([entry["schema"] for entry in CORPUS])
    for keyword in ("$ref", "anyOf", "oneOf", "enum", "const", "pattern", "format", "minimum", "maxItems", "$defs"):
        assert text.count(f'"{keyword}"') >= 5, keyword


async def _complete(client: httpx.AsyncClient, model_id: str, entry: dict[str, Any], temperature: float) -> Any:
    body = {
        "model": model_id,
        "messages": [{"role": "user", "content": entry["prompt"]}],
        "response_format": {"type": "json_schema", "json_schema": {"name": entry["name"], "schema": entry["schema"]}},
        "temperature": temperature,
        "random_seed": 7,
        "max_tokens": MAX_TOKENS,
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, f"{entry['name']}: {response.text}"
    return response.json()["choices"][0]


@pytest.mark.timeout(1800)
async def test_every_schema_yields_valid_json_greedy(server: RunningServer, model_id: str) -> None:
    await check_every_schema(server, model_id, temperature=0.0)


async def check_every_schema(server: RunningServer, model_id: str, *, temperature: float) -> None:
    """Decode every schema at `temperature` and check each reply (the sampled run is its own file,
    `test_corpus_sampled.py`, so that test workers can take the two runs in parallel)."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(client: httpx.AsyncClient, entry: dict[str, Any]) -> tuple[str, Any]:
        async with limit:
            return entry["name"], await _complete(client, model_id, entry, temperature)

    async with server.client(timeout=1200) as client:  # the test's own timeout bounds the run
        results = await asyncio.gather(*(one(client, entry) for entry in CORPUS))
    schemas = {entry["name"]: entry["schema"] for entry in CORPUS}
    failures = []
    for name, choice in results:
        if choice["finish_reason"] not in {"stop", "length"}:
            failures.append(f"{name}: finish_reason {choice['finish_reason']}")
            continue
        if choice["finish_reason"] == "length" and name in OPEN_ENDED:
            continue
        try:
            value = json.loads(choice["message"]["content"])
        except json.JSONDecodeError as exc:
            failures.append(f"{name}: does not parse ({exc}): {choice['message']['content'][:200]}")
            continue
        validator = Draft202012Validator(schemas[name], format_checker=Draft202012Validator.FORMAT_CHECKER)
        problems = [error.message for error in validator.iter_errors(value)]
        if problems:
            failures.append(f"{name}: {problems[:2]} in {choice['message']['content'][:200]}")
    assert not failures, "\n".join(failures)
