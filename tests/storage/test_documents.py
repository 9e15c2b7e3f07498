"""Documents in the database (migration 0008) on SQLite (sqlite-vec, FTS5) and PostgreSQL (real[], tsvector):
stored in one transaction, ranked by vector and by words inside the database, deleted with everything."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from galerne.storage import documents as store
from galerne.storage.database import Database
from galerne.storage.document_tables import FileChunk, FileContent, StoredFile

DIMENSIONS = 8


def _unit(*components: float) -> np.ndarray:
    vector = np.zeros(DIMENSIONS, dtype=np.float32)
    vector[: len(components)] = components
    return vector / np.linalg.norm(vector)


def _file(file_id: str, project: str = "p1", user: str | None = None) -> StoredFile:
    return StoredFile(
        id=file_id,
        project_id=project,
        user_id=user,
        created_at=datetime.now(UTC),
        filename=f"{file_id}.md",
        purpose="documents",
        mime_type="text/markdown",
        num_bytes=10,
        num_pages=None,
        num_chunks=3,
        num_tokens=30,
        embedding_model="all-minilm-l6-v2",
    )


TEXTS = [
    ("Leave", "Employees get twenty-five days of paid vacation per year.", _unit(1, 0)),
    ("Travel", "Train tickets are reimbursed in second class.", _unit(0, 1)),
    ("Remote work", "Télétravail : deux jours par semaine, après la période d'essai.", _unit(1, 1)),
]


def _chunks() -> list[store.NewChunk]:
    return [
        store.NewChunk(index, body, f"Handbook > {heading}", index + 1, index + 1, 10, vector)
        for index, (heading, body, vector) in enumerate(TEXTS)
    ]


def _save(database: Database, file_id: str, **owner: str | None) -> None:
    with database.session() as session:
        _save_in(session, file_id, **owner)


def _save_in(session: Session, file_id: str, **owner: str | None) -> None:
    store.save_file(session, _file(file_id, **owner), b"raw bytes", _chunks())  # type: ignore[arg-type]


def test_chunks_rank_by_cosine_and_vectors_read_back_exactly(database: Database) -> None:
    _save(database, "f1")
    with database.session() as session:
        hits = store.nearest_chunks(session, ["f1"], _unit(0.9, 0.1), limit=3)
        by_id = store.chunks_by_id(session, [chunk_id for chunk_id, _ in hits])
        texts = [by_id[chunk_id].text for chunk_id, _ in hits]
        assert texts == [TEXTS[0][1], TEXTS[2][1], TEXTS[1][1]]
        best = by_id[hits[0][0]]
        assert hits[0][1] == pytest.approx(float(_unit(0.9, 0.1) @ TEXTS[0][2]), abs=1e-5)
        np.testing.assert_array_equal(best.embedding, TEXTS[0][2])
        assert best.heading_path == "Handbook > Leave" and best.page_start == 1


def test_words_match_by_prefix_across_accents_and_case(database: Database) -> None:
    _save(database, "f1")
    with database.session() as session:
        hits = store.lexical_chunks(session, ["f1"], ["vacat", "paid"], limit=3)
        assert [store.chunks_by_id(session, [hits[0][0]])[hits[0][0]].index] == [0]
        assert len(hits) == 1
        remote = store.lexical_chunks(session, ["f1"], ["télétravail"], limit=3)
        assert [chunk_id for chunk_id, _ in remote] == [hits[0][0] + 2]
        headings = store.lexical_chunks(session, ["f1"], ["travel"], limit=3)  # the heading path is searched too
        assert len(headings) == 1


def test_ranking_sees_only_the_files_it_is_given(database: Database) -> None:
    _save(database, "mine")
    _save(database, "theirs", project="p2")
    with database.session() as session:
        dense = store.nearest_chunks(session, ["mine"], _unit(1, 0), limit=10)
        words = store.lexical_chunks(session, ["mine"], ["train"], limit=10)
        chunks = store.chunks_by_id(session, [chunk_id for chunk_id, _ in dense + words])
        assert {chunk.file_id for chunk in chunks.values()} == {"mine"}
        assert len(dense) == 3 and len(words) == 1


def test_deleting_a_file_removes_its_bytes_chunks_and_index_rows(database: Database) -> None:
    _save(database, "f1")
    _save(database, "f2")
    with database.session() as session:
        store.delete_file(session, "f1")
    with database.session() as session:
        assert store.find_file(session, "f1") is None and store.file_content(session, "f1") is None
        assert session.scalar(select(func.count()).select_from(FileChunk).where(FileChunk.file_id == "f1")) == 0
        assert len(store.lexical_chunks(session, ["f1", "f2"], ["vacat"], limit=10)) == 1
        if session.get_bind().dialect.name == "sqlite":
            assert session.scalar(text("SELECT count(*) FROM file_chunks_fts")) == 3


def test_a_failed_save_leaves_nothing(database: Database) -> None:
    with pytest.raises(RuntimeError), database.session() as session:
        store.save_file(session, _file("half"), b"raw", _chunks())
        raise RuntimeError("the upload failed after its rows were written")
    with database.session() as session:
        assert store.find_file(session, "half") is None
        assert session.scalar(select(func.count()).select_from(FileContent)) == 0
        assert session.scalar(select(func.count()).select_from(FileChunk)) == 0
        assert store.lexical_chunks(session, ["half"], ["vacat"], limit=10) == []


def test_listing_keeps_projects_users_and_temporary_files_apart(database: Database) -> None:
    _save(database, "api-file")
    _save(database, "alice-file", user="alice")
    _save(database, "other-project", project="p2")
    with database.session() as session:
        temporary = _file("inline")
        temporary.is_temporary = True
        store.save_file(session, temporary, b"x", [])
    with database.session() as session:
        assert [f.id for f in store.list_files(session, "p1", None)] == ["api-file"]
        assert [f.id for f in store.list_files(session, "p1", "alice")] == ["alice-file"]
        store.delete_temporary_files(session, ["inline", "api-file"])  # only temporary files go
        assert store.find_file(session, "inline") is None and store.find_file(session, "api-file") is not None


def test_stale_inline_documents_are_swept_and_fresh_ones_kept(database: Database) -> None:
    with database.session() as session:
        for file_id, age in (("stale", timedelta(hours=2)), ("fresh", timedelta(minutes=1))):
            inline = _file(file_id)
            inline.is_temporary, inline.created_at = True, datetime.now(UTC) - age
            store.save_file(session, inline, b"x", _chunks())
        _save_in(session, "kept")
    with database.session() as session:
        assert store.delete_stale_temporary_files(session, datetime.now(UTC) - timedelta(hours=1)) == 1
    with database.session() as session:
        assert [store.find_file(session, name) is not None for name in ("stale", "fresh", "kept")] == [
            False,
            True,
            True,
        ]
        assert len(store.lexical_chunks(session, ["stale", "fresh", "kept"], ["vacat"], limit=10)) == 2
