"""Hybrid retrieval over several documents at once: vectors and words, fused by rank, one budget for all.

The embedding model is small and English (all-MiniLM-L6-v2); alone it is weak on French, German, Spanish
and Italian text and on questions asked in another language than their document. A lexical search finds
what it misses (names, numbers, the question's own words), and the other way round for paraphrases.
Their scores are not comparable, so the two rankings are fused by reciprocal rank (Cormack et al., 2009):
a passage scores `sum(1 / (RRF_K + rank))` over the rankings it appears in. In hybrid mode the dense query
first takes feedback from the best lexical hit (`with_feedback`).

All documents of a request are ranked together: the best passages win wherever they are, instead of the
top k of each document (what Open WebUI users complain about, #5850).

Example::

    passages = await retriever.rank(principal, ["file-a", "file-b"], "What is the notice period?", limit=8)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from galerne.documents.search_terms import search_prefixes
from galerne.services.auth import Principal
from galerne.services.embeddings import EmbeddingService
from galerne.storage import documents as store
from galerne.storage.database import Database
from galerne.storage.document_tables import Vector

RRF_K = 60  # the constant of the original paper; ranks past ~60 barely count
CANDIDATES = 50  # per ranking, before fusion
FEEDBACK_PASSAGES = 1  # lexical hits the dense query is moved toward (`with_feedback`)
FEEDBACK_WEIGHT = 0.5


class RetrievalMode(StrEnum):
    DENSE = "dense"
    LEXICAL = "lexical"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class Passage:
    chunk_id: int
    file_id: str
    chunk_index: int
    text: str
    heading_path: str
    page_start: int | None
    page_end: int | None
    num_tokens: int
    score: float


class Retriever:
    def __init__(self, database: Database, embeddings: EmbeddingService) -> None:
        self._database = database
        self._embeddings = embeddings

    async def rank(
        self,
        principal: Principal,
        file_ids: Sequence[str],
        question: str,
        *,
        limit: int,
        mode: RetrievalMode = RetrievalMode.HYBRID,
    ) -> list[Passage]:
        """The `limit` best passages of these files for `question`, best first. The caller has checked that
        the principal may read the files; the question's embedding is metered to the principal."""
        if not file_ids or not question.strip():
            return []
        query: Vector | None = None
        if mode is not RetrievalMode.LEXICAL:
            query = (await self._embeddings.embed([question], principal)).vectors[0]
        prefixes = search_prefixes(question) if mode is not RetrievalMode.DENSE else []
        return await asyncio.to_thread(self._rank, list(file_ids), query, prefixes, limit)

    def _rank(self, file_ids: list[str], query: Vector | None, prefixes: list[str], limit: int) -> list[Passage]:
        with self._database.session() as session:
            rankings = []
            lexical = store.lexical_chunks(session, file_ids, prefixes, CANDIDATES) if prefixes else []
            if query is not None:
                if lexical:
                    feedback = store.chunks_by_id(session, [chunk_id for chunk_id, _ in lexical[:FEEDBACK_PASSAGES]])
                    query = with_feedback(query, [chunk.embedding for chunk in feedback.values()])
                rankings.append(store.nearest_chunks(session, file_ids, query, CANDIDATES))
            if lexical:
                rankings.append(lexical)
            fused = fuse(rankings)[:limit]
            chunks = store.chunks_by_id(session, [chunk_id for chunk_id, _ in fused])
        return [
            Passage(
                chunk_id=chunk_id,
                file_id=chunk.file_id,
                chunk_index=chunk.index,
                text=chunk.text,
                heading_path=chunk.heading_path,
                page_start=chunk.page_start,
                page_end=chunk.page_end,
                num_tokens=chunk.num_tokens,
                score=score,
            )
            for chunk_id, score in fused
            if (chunk := chunks.get(chunk_id)) is not None
        ]


def with_feedback(query: Vector, passages: Sequence[Vector]) -> Vector:
    """Rocchio's pseudo-relevance feedback: the query moved toward the passages the lexical search ranks first.

    An English question and a German passage that share only a name or a number are far apart for an English
    embedding model; the word search finds the name, and the moved query then finds that document's other
    passages about the same thing. Measured on the retrieval set: hybrid top-3 recall 0.88 -> 0.92 (0.91 to
    0.92 for weights 0.3 to 1 and one or two feedback passages)."""
    if not passages:
        return query
    moved: Vector = (query + FEEDBACK_WEIGHT * np.mean(np.stack(passages), axis=0)).astype(np.float32)
    moved /= np.float32(np.linalg.norm(moved))
    return moved


def fuse(rankings: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of (id, score) rankings, each best first; ties keep the first ranking's order."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (item, _) in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda pair: -pair[1])
