"""Every schema of the corpus, decoded by the real model at temperature 0 and 0.8, gives valid JSON.

The corpus (`schemas.json`, 188 hand-written schemas checked by `check_corpus.py`) bounds its strings
and arrays so that a reply always ends; its four open objects (`additionalProperties` true or a
schema) have no such bound, so for them only a `stop` reply is checked (a `length` one is documented
as possibly incomplete).
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
MAX_TOKENS = 1500
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
@pytest.mark.parametrize("temperature", [0.0, 0.8])
async def test_every_schema_yields_valid_json(server: RunningServer, model_id: str, temperature: float) -> None:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(client: httpx.AsyncClient, entry: dict[str, Any]) -> tuple[str, Any]:
        async with limit:
            return entry["name"], await _complete(client, model_id, entry, temperature)

    async with server.client(timeout=600) as client:
        results = await asyncio.gather(*(one(client, entry) for entry in CORPUS))
    schemas = {entry["name"]: entry["schema"] for entry in CORPUS}
    failures = []
    for name, choice in results:
        if choice["finish_reason"] != "stop":
            if name not in OPEN_ENDED:
                failures.append(f"{name}: finish_reason {choice['finish_reason']}")
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
