"""Uploaded documents: extract, chunk along the structure, embed, store; list, read and delete them.

An upload is processed before it is answered, and stored in one transaction: extraction, embedding or the
database failing half-way leaves nothing behind, and a file that is listed is always searchable. A file
belongs to the caller's project; a Le Chat upload also to its user. Anyone else asking for its id gets the
same 404 as for an id that never existed, so ids cannot be probed.

Example::

    stored = await documents.upload(principal, "handbook.pdf", data)
    files = await documents.files(principal)
"""

from __future__ import annotations

import asyncio
import mimetypes
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from galerne.documents import chunk, extract
from galerne.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from galerne.services.auth import Principal
from galerne.services.embeddings import EmbeddingService
from galerne.services.retrieval import Passage, RetrievalMode, Retriever
from galerne.storage import documents as store
from galerne.storage.database import Database
from galerne.storage.document_tables import StoredFile

DOCUMENTS_PURPOSE = "documents"
# la Plateforme's and OpenAI's purposes for files a model reads; fine-tuning and batch files are not served.
READABLE_PURPOSES = frozenset({DOCUMENTS_PURPOSE, "assistants", "user_data", "ocr"})
# Word pieces per chunk: the embedding model reads 256, the heading path takes some of them.
CHUNK_TOKENS = 200


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    max_bytes: int = 32 * 1024 * 1024
    max_chunks: int = 20_000  # ~4M words: far past a 200-page PDF


class DocumentService:
    def __init__(self, database: Database, embeddings: EmbeddingService, limits: DocumentLimits | None = None) -> None:
        self._database = database
        self._embeddings = embeddings
        self.limits = limits or DocumentLimits()
        self.retriever = Retriever(database, embeddings)

    async def upload(
        self,
        principal: Principal,
        filename: str,
        data: bytes,
        *,
        purpose: str = DOCUMENTS_PURPOSE,
        is_temporary: bool = False,
    ) -> StoredFile:
        """Process and store one file; raises 4xx on a bad file (type, empty, no text, too big)."""
        if purpose not in READABLE_PURPOSES:
            raise InvalidRequestError(
                f"purpose {purpose!r} is not served; use one of {', '.join(sorted(READABLE_PURPOSES))}",
                param="purpose",
            )
        if len(data) > self.limits.max_bytes:
            raise PayloadTooLargeError(f"the file is larger than the {self.limits.max_bytes}-byte limit")
        document = await asyncio.to_thread(extract, data, filename)
        count = self._embeddings.token_counter()
        chunks = await asyncio.to_thread(chunk, document, max_tokens=CHUNK_TOKENS, count_tokens=count)
        if not chunks:
            raise InvalidRequestError(f"{filename} has no text to read", param="file")
        if len(chunks) > self.limits.max_chunks:
            raise PayloadTooLargeError(f"{filename} has more than {self.limits.max_chunks} passages of text")
        # A passage is embedded with its heading path (the text under "Leave > Carry-over" is about leave),
        # and stored without it: the path has its own column, and the prompt shows it once per section.
        embedded = await self._embeddings.embed([piece.text for piece in chunks], principal)
        token_counts = await asyncio.to_thread(lambda: [count(piece.text) for piece in chunks])
        new_chunks = [
            store.NewChunk(
                index=piece.index,
                text=piece.body,
                heading_path=" > ".join(piece.heading_path),
                page_start=piece.page_start,
                page_end=piece.page_end,
                num_tokens=num_tokens,
                embedding=vector,
            )
            for piece, vector, num_tokens in zip(chunks, embedded.vectors, token_counts, strict=True)
        ]
        stored = StoredFile(
            id=str(uuid.uuid4()),
            project_id=principal.project_id,
            user_id=principal.user_id,
            created_at=datetime.now(UTC),
            filename=filename,
            purpose=purpose,
            mime_type=mimetypes.guess_type(filename)[0] or "application/octet-stream",
            num_bytes=len(data),
            num_pages=document.num_pages,
            num_chunks=len(new_chunks),
            num_tokens=sum(piece.num_tokens for piece in new_chunks),
            embedding_model=embedded.model,
            is_temporary=is_temporary,
        )
        await self._database.run(lambda session: store.save_file(session, stored, data, new_chunks))
        return stored

    async def files(self, principal: Principal, *, purpose: str | None = None, limit: int = 100) -> list[StoredFile]:
        return await self._database.run(
            lambda session: store.list_files(
                session, principal.project_id, principal.user_id, purpose=purpose, limit=limit
            )
        )

    async def get(self, principal: Principal, file_id: str) -> StoredFile:
        return await self._database.run(lambda session: owned_file(session, principal, file_id))

    async def content(self, principal: Principal, file_id: str) -> tuple[StoredFile, bytes]:
        def read(session: Session) -> tuple[StoredFile, bytes]:
            stored = owned_file(session, principal, file_id)
            return stored, store.file_content(session, stored.id) or b""

        return await self._database.run(read)

    async def delete(self, principal: Principal, file_id: str) -> None:
        def write(session: Session) -> None:
            store.delete_file(session, owned_file(session, principal, file_id).id)

        await self._database.run(write)

    async def owned(self, principal: Principal, file_ids: Sequence[str]) -> list[StoredFile]:
        """These files, in order, if the caller may read every one of them; 404 on the first it may not."""
        return await self._database.run(
            lambda session: [owned_file(session, principal, file_id) for file_id in file_ids]
        )

    async def search(
        self, principal: Principal, file_ids: Sequence[str], query: str, *, limit: int, mode: RetrievalMode
    ) -> tuple[dict[str, str], list[Passage]]:
        """The best passages of these files (404 on one the caller may not read), and the files' names."""
        names = {stored.id: stored.filename for stored in await self.owned(principal, file_ids)}
        return names, await self.retriever.rank(principal, list(names), query, limit=limit, mode=mode)

    async def texts(self, file_ids: Sequence[str]) -> dict[str, str]:
        """Each file's text rebuilt from its chunks, in order, with a heading line where the section changes."""

        def read(session: Session) -> dict[str, str]:
            parts: dict[str, list[str]] = {file_id: [] for file_id in file_ids}
            headings: dict[str, str] = {}
            for piece in store.chunks_of(session, file_ids):
                if piece.heading_path and headings.get(piece.file_id) != piece.heading_path:
                    parts[piece.file_id].append(f"## {piece.heading_path}")
                    headings[piece.file_id] = piece.heading_path
                parts[piece.file_id].append(piece.text)
            return {file_id: "\n\n".join(texts) for file_id, texts in parts.items()}

        return await self._database.run(read)

    async def forget_stale_temporary(self) -> int:
        """At start-up: delete inline documents left by chat calls a killed process never finished (their text
        is needed only while a prompt is built, seconds; an hour is far past any call still running)."""
        before = datetime.now(UTC) - timedelta(hours=1)
        return await self._database.run(lambda session: store.delete_stale_temporary_files(session, before))

    async def forget_temporary(self, file_ids: Sequence[str]) -> None:
        """Delete the inline documents of a finished chat call."""
        if file_ids:
            await self._database.run(lambda session: store.delete_temporary_files(session, file_ids))


def owned_file(session: Session, principal: Principal, file_id: str) -> StoredFile:
    stored = store.find_file(session, file_id)
    if stored is None or not can_read(principal, stored):
        raise NotFoundError(f"no file {file_id!r}; list yours with GET /v1/files", param="file_id")
    return stored


def can_read(principal: Principal, stored: StoredFile) -> bool:
    """A project's API keys share its files; a Le Chat user sees only their own uploads."""
    return stored.project_id == principal.project_id and stored.user_id == principal.user_id
