"""Documents in the database: store a processed file in one transaction, find, delete, and rank its chunks.

Ranking runs inside the database, behind the two functions `nearest_chunks` and `lexical_chunks`:

| backend    | vectors (cosine)                                        | words                         |
|------------|---------------------------------------------------------|-------------------------------|
| SQLite     | sqlite-vec's `vec_distance_cosine` over float32 blobs   | FTS5, `bm25()`                |
| PostgreSQL | `real[]`, a dot product in SQL (vectors are normalised) | `tsvector` (GIN), `ts_rank_cd`|

Both scan only the chunks of the files a request names (a handful of documents, at most some thousands
of chunks), so an exact scan beats an approximate index; pgvector would change one query here, and is
not packaged for the Debian release CI runs on.

Example::

    with database.session() as session:
        save_file(session, stored, data, chunks)
        hits = nearest_chunks(session, [stored.id], query_vector, limit=20)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.orm import Session

from galerne.storage.document_tables import FileChunk, FileContent, StoredFile, Vector


@dataclass(frozen=True, slots=True)
class NewChunk:
    index: int
    text: str
    heading_path: str
    page_start: int | None
    page_end: int | None
    num_tokens: int
    embedding: Vector


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def save_file(session: Session, stored: StoredFile, data: bytes, chunks: Sequence[NewChunk]) -> None:
    """Add the file, its bytes, its chunks and their lexical index rows; the caller's transaction makes the
    four one: an upload that fails anywhere leaves nothing behind."""
    session.add(stored)
    session.flush()  # the file row first: its content and chunks refer to it (no ORM relationship orders them)
    session.add(FileContent(file_id=stored.id, data=data))
    rows = [
        FileChunk(
            file_id=stored.id,
            index=chunk.index,
            text=chunk.text,
            heading_path=chunk.heading_path,
            page_start=chunk.page_start,
            page_end=chunk.page_end,
            num_tokens=chunk.num_tokens,
            embedding=chunk.embedding,
        )
        for chunk in chunks
    ]
    session.add_all(rows)
    session.flush()
    if rows and not _is_postgres(session):  # PostgreSQL's tsvector column is generated
        session.execute(
            text("INSERT INTO file_chunks_fts (rowid, text) VALUES (:id, :text)"),
            [{"id": row.id, "text": f"{row.heading_path}\n{row.text}"} for row in rows],
        )


def find_file(session: Session, file_id: str) -> StoredFile | None:
    return session.get(StoredFile, file_id)


def list_files(
    session: Session, project_id: str | None, user_id: str | None, *, purpose: str | None = None, limit: int = 100
) -> list[StoredFile]:
    """A project's API uploads (`user_id` None) or one Le Chat user's own, newest first."""
    project = StoredFile.project_id.is_(None) if project_id is None else StoredFile.project_id == project_id
    user = StoredFile.user_id.is_(None) if user_id is None else StoredFile.user_id == user_id
    query = select(StoredFile).where(project, user, StoredFile.is_temporary.is_(False))
    if purpose is not None:
        query = query.where(StoredFile.purpose == purpose)
    return list(session.scalars(query.order_by(StoredFile.created_at.desc(), StoredFile.id).limit(limit)))


def file_content(session: Session, file_id: str) -> bytes | None:
    content = session.get(FileContent, file_id)
    return None if content is None else content.data


def delete_file(session: Session, file_id: str) -> None:
    """Delete a file with its bytes, chunks and lexical rows."""
    if not _is_postgres(session):
        session.execute(
            text("DELETE FROM file_chunks_fts WHERE rowid IN (SELECT id FROM file_chunks WHERE file_id = :file_id)"),
            {"file_id": file_id},
        )
    session.execute(delete(FileChunk).where(FileChunk.file_id == file_id))
    session.execute(delete(FileContent).where(FileContent.file_id == file_id))
    session.execute(delete(StoredFile).where(StoredFile.id == file_id))


def chunks_of(session: Session, file_ids: Sequence[str]) -> list[FileChunk]:
    """Every chunk of these files, in document order (a whole document, when it fits the context)."""
    query = select(FileChunk).where(FileChunk.file_id.in_(file_ids)).order_by(FileChunk.file_id, FileChunk.index)
    return list(session.scalars(query))


def chunks_by_id(session: Session, chunk_ids: Sequence[int]) -> dict[int, FileChunk]:
    return {chunk.id: chunk for chunk in session.scalars(select(FileChunk).where(FileChunk.id.in_(chunk_ids)))}


def nearest_chunks(session: Session, file_ids: Sequence[str], query: Vector, limit: int) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity) of the `limit` chunks closest to `query`, best first."""
    if _is_postgres(session):
        statement = text(
            "SELECT id, (SELECT sum(a * b) FROM unnest(embedding, CAST(:query AS real[])) AS t(a, b)) AS score "
            "FROM file_chunks WHERE file_id IN :file_ids ORDER BY score DESC, id LIMIT :limit"
        )
        vector: object = [float(x) for x in query]
    else:
        statement = text(
            "SELECT id, 1.0 - vec_distance_cosine(embedding, :query) AS score "
            "FROM file_chunks WHERE file_id IN :file_ids ORDER BY score DESC, id LIMIT :limit"
        )
        vector = query.astype("<f4").tobytes()
    statement = statement.bindparams(bindparam("file_ids", expanding=True))
    rows = session.execute(statement, {"query": vector, "file_ids": list(file_ids), "limit": limit})
    return [(int(chunk_id), float(score)) for chunk_id, score in rows]


def lexical_chunks(
    session: Session, file_ids: Sequence[str], prefixes: Sequence[str], limit: int
) -> list[tuple[int, float]]:
    """(chunk id, lexical score) of the `limit` chunks that best match any of the word `prefixes`, best first.

    `prefixes` are lower-case word stems made of letters and digits only (see `documents.search_terms`),
    so they go into the engines' query syntax without escaping."""
    if not prefixes:
        return []
    if _is_postgres(session):
        statement = text(
            "SELECT id, ts_rank_cd(search, query) AS score FROM file_chunks, to_tsquery('simple', :match) AS query "
            "WHERE file_id IN :file_ids AND search @@ query ORDER BY score DESC, id LIMIT :limit"
        )
        match = " | ".join(f"{prefix}:*" for prefix in prefixes)
    else:
        statement = text(
            "SELECT c.id, -bm25(file_chunks_fts) AS score FROM file_chunks_fts JOIN file_chunks AS c "
            "ON c.id = file_chunks_fts.rowid WHERE file_chunks_fts MATCH :match AND c.file_id IN :file_ids "
            "ORDER BY bm25(file_chunks_fts), c.id LIMIT :limit"
        )
        match = " OR ".join(f'"{prefix}"*' for prefix in prefixes)
    statement = statement.bindparams(bindparam("file_ids", expanding=True))
    rows = session.execute(statement, {"match": match, "file_ids": list(file_ids), "limit": limit})
    return [(int(chunk_id), float(score)) for chunk_id, score in rows]


def delete_temporary_files(session: Session, file_ids: Sequence[str]) -> None:
    for file_id in file_ids:
        stored = session.get(StoredFile, file_id)
        if stored is not None and stored.is_temporary:
            delete_file(session, file_id)


def delete_stale_temporary_files(session: Session, before: datetime) -> int:
    """Delete the inline documents of chat calls that never finished (the process was killed mid-call)."""
    stale = list(session.scalars(select(StoredFile.id).where(StoredFile.is_temporary, StoredFile.created_at < before)))
    for file_id in stale:
        delete_file(session, file_id)
    return len(stale)
