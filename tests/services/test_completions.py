"""`CompletionService.score` on the real model, against a direct llama.cpp computation.

The direct computation decodes the whole token list in one sequence with every row's logits, on a context of
its own, through the raw llama.cpp bindings; it uses the engine's own context settings (flash attention on,
one KV stream per slot, the same batch and ubatch sizes), as the issue asks scores to match to 1e-3. The
service computes the same scores in the engine's batched loop: the context prefilled once and copied to
every continuation, in batches shared with other requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as ll
import numpy as np
import pytest
from sqlalchemy import select

from galerne.catalog import BUNDLED_GGUF, Catalog, ModelEntry
from galerne.config import Settings
from galerne.engines.llamacpp.logprobs import log_softmax
from galerne.engines.llamacpp.model import LlamaModel
from galerne.protocol.chat import ChatCompletionRequest
from galerne.services.admission import Admission
from galerne.services.auth import Principal
from galerne.services.chat import ChatService
from galerne.services.completions import CompletionService, ContinuationScore
from galerne.services.limits import InProcessLimiter
from galerne.services.metering import UsageMeter
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry
from galerne.storage.database import Database
from galerne.storage.tables import UsageRecord
from tests.conftest import engine_threads

MODEL = "smol"
CONTEXT_LENGTH = 1024
NUM_SLOTS = 4
BATCH = 256  # the catalogue's default max_batch_tokens: the engine's n_batch and n_ubatch
TOLERANCE = 1e-3
PRINCIPAL = Principal(key_id="k-score", project_id="p-score", project_name="score")
CONTEXT = "Question: What is the capital of France?\nAnswer:"
CONTINUATIONS = (" Paris", " Rome", " The capital of France is Paris, a city on the Seine.")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelRegistry]:
    entry = ModelEntry(id=MODEL, gguf=BUNDLED_GGUF, context_length=CONTEXT_LENGTH, num_slots=NUM_SLOTS)
    settings = Settings(home=tmp_path_factory.mktemp("home"), num_threads=engine_threads())
    loaded = ModelRegistry.load(Catalog(models=(entry,)), settings, Metrics())
    yield loaded
    loaded.close()


@dataclass
class Services:
    chat: ChatService
    completions: CompletionService
    meter: UsageMeter
    database: Database


@pytest.fixture
def services(registry: ModelRegistry, tmp_path: Path) -> Iterator[Services]:
    database = Database.open(f"sqlite:///{tmp_path / 'usage.db'}")
    meter = UsageMeter(database, tmp_path / "usage-journal")
    chat = ChatService(registry, Metrics(), Admission(InProcessLimiter(), meter, database))
    yield Services(chat, CompletionService(chat), meter, database)
    meter.close()
    database.close()


@pytest.fixture(scope="module")
def direct(registry: ModelRegistry) -> Iterator[DirectScorer]:
    scorer = DirectScorer(registry.engine_for(registry.catalog.resolve(MODEL)).model)  # type: ignore[attr-defined]
    yield scorer
    scorer.close()


class DirectScorer:
    """log P(token i | tokens before it) from one llama.cpp context with the engine's settings, sequence 0 alone."""

    def __init__(self, model: LlamaModel) -> None:
        self.model = model
        params = ll.llama_context_default_params()
        params.n_ctx = CONTEXT_LENGTH * NUM_SLOTS
        params.n_batch = BATCH
        params.n_ubatch = BATCH
        params.n_seq_max = NUM_SLOTS
        params.kv_unified = False
        params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.n_threads = params.n_threads_batch = 2
        self.context = ll.llama_init_from_model(model.handle, params)
        self.batch = ll.llama_batch_init(BATCH, 0, 1)

    def logprobs(self, tokens: list[int]) -> list[tuple[float, bool]]:
        """(log-probability, was it the argmax) of tokens[1:], each given everything before it."""
        ll.llama_memory_clear(ll.llama_get_memory(self.context), True)
        rows: list[np.ndarray] = []
        for start in range(0, len(tokens), BATCH):
            chunk = tokens[start : start + BATCH]
            for offset, token in enumerate(chunk):
                self.batch.token[offset] = token
                self.batch.pos[offset] = start + offset
                self.batch.n_seq_id[offset] = 1
                self.batch.seq_id[offset][0] = 0
                self.batch.logits[offset] = 1
            self.batch.n_tokens = len(chunk)
            assert ll.llama_decode(self.context, self.batch) == 0
            for offset in range(len(chunk)):
                pointer = ll.llama_get_logits_ith(self.context, offset)
                rows.append(log_softmax(np.ctypeslib.as_array(pointer, shape=(self.model.num_vocab,))))
        pairs = zip(rows, tokens[1:], strict=False)  # row i predicts token i + 1
        return [(float(row[token]), bool(np.argmax(row) == token)) for row, token in pairs]

    def score(self, context: str, continuation: str) -> ContinuationScore:
        """lm-eval's split, written out again here: tokens(context) + tokens(context + continuation)[len(...):]."""
        tokenize = self.model.tokenize
        prefix = self.model.bos_token_id if self.model.bos_token_id >= 0 else self.model.eos_token_id
        context_tokens = tokenize(context, parse_special=False) or [prefix]  # lm-eval's prefix token
        whole = tokenize(context + continuation, parse_special=False)
        tail = whole[len(context_tokens) :] if context else tokenize(continuation, parse_special=False)
        scored = self.logprobs(context_tokens + tail)[len(context_tokens) - 1 :]
        return ContinuationScore(sum(lp for lp, _ in scored), len(scored), all(greedy for _, greedy in scored))

    def close(self) -> None:
        ll.llama_batch_free(self.batch)
        ll.llama_free(self.context)


def _assert_close(scores: list[ContinuationScore], expected: list[ContinuationScore]) -> float:
    worst = 0.0
    for got, want in zip(scores, expected, strict=True):
        assert got.num_tokens == want.num_tokens
        assert got.is_greedy == want.is_greedy
        worst = max(worst, abs(got.logprob - want.logprob))
    assert worst < TOLERANCE, f"largest difference from direct llama.cpp: {worst:.2e}"
    return worst


async def test_scores_match_a_direct_llama_cpp_computation(services: Services, direct: DirectScorer) -> None:
    scores = await services.completions.score(MODEL, CONTEXT, CONTINUATIONS, PRINCIPAL)
    expected = [direct.score(CONTEXT, continuation) for continuation in CONTINUATIONS]
    _assert_close(scores, expected)
    assert scores[0].logprob > scores[1].logprob  # the model knows its capitals
    assert all(score.logprob < 0 for score in scores)


async def test_scores_in_a_busy_batch_match_too(services: Services, direct: DirectScorer) -> None:
    """Several scoring calls and a chat reply decoded together give the scores of one sequence alone."""
    contexts = [CONTEXT, "The sky is", "Le chat est sur la", ""]
    chat_request = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": "Tell a story."}], "max_tokens": 40}
    )

    async def chat() -> None:
        await services.chat.complete(await services.chat.start(chat_request, PRINCIPAL))

    results = await asyncio.gather(
        chat(), *(services.completions.score(MODEL, context, CONTINUATIONS, PRINCIPAL) for context in contexts)
    )
    for context, scores in zip(contexts, results[1:], strict=True):
        assert scores is not None
        _assert_close(scores, [direct.score(context, continuation) for continuation in CONTINUATIONS])


async def test_trailing_space_of_the_context_moves_to_the_continuation(
    services: Services, direct: DirectScorer
) -> None:
    [moved] = await services.completions.score(MODEL, "The sky is ", ["blue"], PRINCIPAL)
    _assert_close([moved], [direct.score("The sky is", " blue")])


async def test_scoring_is_metered_as_prompt_tokens(services: Services, direct: DirectScorer) -> None:
    await services.completions.score(MODEL, CONTEXT, CONTINUATIONS, PRINCIPAL)
    context_tokens = len(direct.model.tokenize(CONTEXT, parse_special=False))
    expected = context_tokens + sum(direct.score(CONTEXT, c).num_tokens for c in CONTINUATIONS)
    services.meter.close()  # flushes
    with services.database.session() as session:
        records = session.scalars(select(UsageRecord).where(UsageRecord.project_id == "p-score")).all()
    assert [(r.prompt_tokens, r.completion_tokens, r.status, r.model) for r in records] == [(expected, 0, "ok", MODEL)]
