"""A conversation's documents on SQLite and PostgreSQL: listed in order, another user's conversation or file a
404, removing one deletes it, deleting the conversation deletes them all (bytes, passages and lexical rows),
references kept with an assistant message, and attaching refused plainly on a server without an embedder."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select, text

from galerne.catalog import default_catalog
from galerne.errors import NotFoundError, UnsupportedFeatureError
from galerne.services.attachments import AttachmentService
from galerne.services.auth import Principal
from galerne.services.conversations import ConversationService, SourcePassage
from galerne.storage import conversations as conversation_store
from galerne.storage import documents as document_store
from galerne.storage.chat_tables import ConversationFile, Message
from galerne.storage.database import Database
from galerne.storage.document_tables import FileChunk, FileContent, StoredFile
from tests.services.chat_history import add_user

START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _upload(database: Database, user_id: str, filename: str) -> str:
    """A processed upload of `user_id`, stored as `DocumentService.upload` stores it (two passages)."""
    file_id = str(uuid.uuid4())
    stored = StoredFile(
        id=file_id,
        project_id=None,
        user_id=user_id,
        created_at=START,
        filename=filename,
        purpose="documents",
        mime_type="text/markdown",
        num_bytes=42,
        num_pages=None,
        num_chunks=2,
        num_tokens=20,
        embedding_model="all-minilm-l6-v2",
    )
    vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
    chunks = [
        document_store.NewChunk(index, f"{filename} passage {index}", "Heading", None, None, 10, vector)
        for index in range(2)
    ]
    with database.session() as session:
        document_store.save_file(session, stored, b"# raw bytes", chunks)
    return file_id


def _attach(database: Database, user_id: str, conversation_id: str, filename: str, minutes: int) -> str:
    file_id = _upload(database, user_id, filename)
    with database.session() as session:
        conversation_store.link_file(session, conversation_id, file_id, START + timedelta(minutes=minutes))
    return file_id


def _count(database: Database, table: type[object], file_id: str) -> int:
    column = {
        StoredFile: StoredFile.id,
        FileContent: FileContent.file_id,
        FileChunk: FileChunk.file_id,
        ConversationFile: ConversationFile.file_id,
    }[table]  # type: ignore[index]
    with database.session() as session:
        return int(session.scalar(select(func.count()).where(column == file_id)) or 0)


async def test_files_are_listed_in_order_and_only_to_their_owner(database: Database) -> None:
    owner, intruder = add_user(database), add_user(database)
    conversations = ConversationService(database, default_catalog())
    attachments = AttachmentService(database, None)
    conversation = await conversations.create(owner)
    second = _attach(database, owner, conversation.id, "b.md", minutes=2)
    first = _attach(database, owner, conversation.id, "a.md", minutes=1)

    listed = await attachments.files(owner, conversation.id)
    assert [(f.id, f.filename, f.num_chunks) for f in listed] == [(first, "a.md", 2), (second, "b.md", 2)]
    detail = await conversations.get(owner, conversation.id)
    assert [f.id for f in detail.files] == [first, second]
    exported = await conversations.export_json(owner, conversation.id)
    assert [f["filename"] for f in exported["files"]] == ["a.md", "b.md"]

    with pytest.raises(NotFoundError):
        await attachments.files(intruder, conversation.id)
    with pytest.raises(NotFoundError):
        await attachments.remove(intruder, conversation.id, first)
    assert _count(database, StoredFile, first) == 1  # the intruder's attempt changed nothing


async def test_removing_a_file_deletes_it_and_only_files_of_the_conversation_can_be_removed(
    database: Database,
) -> None:
    owner = add_user(database)
    conversations = ConversationService(database, default_catalog())
    attachments = AttachmentService(database, None)
    conversation = await conversations.create(owner)
    other = await conversations.create(owner)
    kept = _attach(database, owner, conversation.id, "kept.md", minutes=1)
    removed = _attach(database, owner, conversation.id, "removed.md", minutes=2)
    elsewhere = _attach(database, owner, other.id, "elsewhere.md", minutes=3)

    with pytest.raises(NotFoundError):  # the user's own file, but of another conversation
        await attachments.remove(owner, conversation.id, elsewhere)
    with pytest.raises(NotFoundError):
        await attachments.remove(owner, conversation.id, str(uuid.uuid4()))
    await attachments.remove(owner, conversation.id, removed)

    assert [f.id for f in await attachments.files(owner, conversation.id)] == [kept]
    for table in (StoredFile, FileContent, FileChunk, ConversationFile):
        assert _count(database, table, removed) == 0, table
    assert _count(database, FileChunk, elsewhere) == 2


async def test_deleting_a_conversation_deletes_its_files(database: Database) -> None:
    owner = add_user(database)
    conversations = ConversationService(database, default_catalog())
    conversation = await conversations.create(owner)
    survivor = await conversations.create(owner)
    gone = [_attach(database, owner, conversation.id, f"{name}.md", minutes=i) for i, name in enumerate("xyz")]
    kept = _attach(database, owner, survivor.id, "kept.md", minutes=9)

    await conversations.delete(owner, conversation.id)

    for file_id in gone:
        for table in (StoredFile, FileContent, FileChunk, ConversationFile):
            assert _count(database, table, file_id) == 0, (table, file_id)
    assert _count(database, FileChunk, kept) == 2
    if database.engine.dialect.name == "sqlite":  # the FTS5 rows go too: the words cannot be found any more
        with database.session() as session:
            found = session.execute(text("SELECT count(*) FROM file_chunks_fts WHERE file_chunks_fts MATCH 'x'"))
            assert found.scalar() == 0
            found = session.execute(text("SELECT count(*) FROM file_chunks_fts WHERE file_chunks_fts MATCH 'kept'"))
            assert found.scalar() == 2


async def test_references_are_kept_with_the_assistant_message(database: Database) -> None:
    owner = add_user(database)
    conversations = ConversationService(database, default_catalog())
    conversation = await conversations.create(owner)
    reference = {
        "id": 1,
        "file_id": str(uuid.uuid4()),
        "filename": "a.pdf",
        "chunk_index": 3,
        "page_start": 2,
        "page_end": 3,
        "score": 0.81,
        "text": "<b>not markup</b>",
    }
    with database.session() as session:
        session.add(Message(conversation_id=conversation.id, position=0, role="user", content="Q", created_at=START))
        session.add(
            Message(
                conversation_id=conversation.id,
                position=1,
                role="assistant",
                content="A [1]",
                created_at=START,
                references=[reference],
            )
        )

    stored = (await conversations.get(owner, conversation.id)).messages
    assert stored[0].references == ()
    assert stored[1].references == (SourcePassage(**reference),)  # type: ignore[arg-type]
    exported = await conversations.export_markdown(owner, conversation.id)
    assert "## Assistant" in exported and "- [1] a.pdf, pages 2-3, score 0.81" in exported
    assert (await conversations.export_json(owner, conversation.id))["messages"][1]["references"] == [reference]


async def test_attaching_needs_an_embedding_model(database: Database) -> None:
    owner = add_user(database)
    conversation = await ConversationService(database, default_catalog()).create(owner)
    principal = Principal(key_id=None, project_id=None, project_name="chat", user_id=owner)
    with pytest.raises(UnsupportedFeatureError, match="embedding model"):
        await AttachmentService(database, None).attach(principal, owner, conversation.id, "a.txt", b"text")
