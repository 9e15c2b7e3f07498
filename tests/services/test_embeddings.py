"""`EmbeddingService.embed`, the in-process door document ingestion and retrieval use, on the real model: vectors
as the API gives them, over-long texts cut rather than refused, any number of texts, metered to the project and
held to its limits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from galerne.catalog import BUNDLED_GGUF, EMBEDDING_MODEL_ID, Catalog, ModelEntry, builtin_entry
from galerne.config import Settings
from galerne.errors import RateLimitExceededError, UnsupportedFeatureError
from galerne.protocol.embeddings import EmbeddingRequest
from galerne.services.admission import Admission
from galerne.services.auth import Principal
from galerne.services.embeddings import MAX_INPUTS, EmbeddingService
from galerne.services.limits import InProcessLimiter, RateLimits
from galerne.services.metering import UsageMeter
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry
from galerne.storage.database import Database
from galerne.storage.tables import UsageRecord

PRICE = 0.1  # per million input tokens
PRINCIPAL = Principal(key_id="k-docs", project_id="p-docs", project_name="docs")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelRegistry]:
    embedding = builtin_entry(EMBEDDING_MODEL_ID).model_copy(update={"price_input_per_million": PRICE})
    chat = ModelEntry(id="smol", gguf=BUNDLED_GGUF, context_length=512, num_slots=1)
    settings = Settings(home=tmp_path_factory.mktemp("home"), num_threads=1)
    loaded = ModelRegistry.load(Catalog(models=(chat, embedding)), settings, Metrics())
    yield loaded
    loaded.close()


@dataclass
class Services:
    embeddings: EmbeddingService
    meter: UsageMeter
    database: Database

    def records(self) -> list[tuple[int, int, str, str, int]]:
        self.meter.close()  # flushes
        with self.database.session() as session:
            rows = session.scalars(select(UsageRecord).where(UsageRecord.project_id == "p-docs")).all()
        return [(r.prompt_tokens, r.completion_tokens, r.status, r.model, r.cost_micros) for r in rows]


@pytest.fixture
def services(registry: ModelRegistry, tmp_path: Path) -> Iterator[Services]:
    database = Database.open(f"sqlite:///{tmp_path / 'usage.db'}")
    meter = UsageMeter(database, tmp_path / "usage-journal")
    service = EmbeddingService(registry, Metrics(), Admission(InProcessLimiter(), meter, database))
    yield Services(service, meter, database)
    meter.close()
    database.close()


async def test_embed_gives_the_api_vectors_and_meters_them(services: Services) -> None:
    texts = ["Où se trouve la gare ?", "The station is next to the river."]
    embedded = await services.embeddings.embed(texts, PRINCIPAL)
    assert embedded.model == EMBEDDING_MODEL_ID
    assert embedded.vectors.shape == (2, 384) and embedded.vectors.dtype == np.float32
    api = await services.embeddings.create(EmbeddingRequest(model="minilm", input=texts), PRINCIPAL)
    assert np.allclose(embedded.vectors, np.array([item.embedding for item in api.data]), atol=1e-6)
    assert embedded.num_tokens == api.usage.prompt_tokens
    cost = round(embedded.num_tokens * PRICE)
    assert services.records() == [(embedded.num_tokens, 0, "ok", EMBEDDING_MODEL_ID, cost)] * 2


async def test_embed_cuts_long_texts_and_takes_any_number(services: Services) -> None:
    long = "A paragraph about the weather and the trains. " * 80  # ~800 word pieces
    texts = [long] + [f"chunk {i}" for i in range(MAX_INPUTS + 3)]
    embedded = await services.embeddings.embed(texts, PRINCIPAL)
    assert embedded.vectors.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(embedded.vectors, axis=1), 1.0, atol=1e-5)
    records = services.records()
    assert len(records) == 2  # one usage record per MAX_INPUTS texts
    assert sum(record[0] for record in records) == embedded.num_tokens
    assert records[0][0] >= 256 + MAX_INPUTS - 1  # the long text counted as the 256 tokens it was read as


async def test_embed_with_no_text_costs_nothing(services: Services) -> None:
    embedded = await services.embeddings.embed([], PRINCIPAL)
    assert embedded.vectors.shape == (0, 384) and embedded.num_tokens == 0
    assert services.records() == []


async def test_embed_refuses_a_chat_model_and_a_project_over_its_limit(services: Services) -> None:
    with pytest.raises(UnsupportedFeatureError, match="does not offer embeddings"):
        await services.embeddings.embed(["text"], PRINCIPAL, model="smol")
    limited = Principal(key_id="k-lim", project_id="p-lim", project_name="lim", limits=RateLimits(tokens_per_minute=40))
    await services.embeddings.embed(["a short text"], limited)
    with pytest.raises(RateLimitExceededError):
        await services.embeddings.embed(["a much longer text " * 12], limited)
