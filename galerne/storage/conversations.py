"""Queries over Le Chat's history. Every function that reads by id also takes the owner's `user_id`, so
a conversation of another user is simply not found: there is no query that could leak it.

Each function is one SQL statement (two for a delete), whatever the history's size, so a page's query
count is a constant the tests assert.

Example::

    with database.session() as session:
        rows = conversations.list_page(session, user_id, limit=50)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    and_,
    column,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.orm import Session

from galerne.storage import documents
from galerne.storage.chat_tables import Conversation, ConversationFile, Message
from galerne.storage.document_tables import StoredFile

# What a list or a search returns: enough for the sidebar, never the system prompt or messages.
_LISTED = (Conversation.id, Conversation.title, Conversation.model, Conversation.updated_at)
_MAX_SEARCH_WORDS = 8
_fts = table("messages_fts", column("rowid"))


def add_conversation(session: Session, conversation: Conversation) -> Conversation:
    session.add(conversation)
    session.flush()
    return conversation


def find_conversation(session: Session, user_id: str, conversation_id: str) -> Conversation | None:
    """The user's conversation, or None — also when it exists but belongs to someone else."""
    query = select(Conversation).where(Conversation.id == conversation_id, Conversation.user_id == user_id)
    return session.scalars(query).first()


def list_page(
    session: Session, user_id: str, *, limit: int, before: tuple[datetime, str] | None = None
) -> Sequence[Row[str, str, str, datetime]]:
    """Newest first, `limit` rows after the keyset `before` (updated_at, id) — an index range scan on
    (user_id, updated_at, id), never an OFFSET that reads the skipped rows."""
    query = select(*_LISTED).where(Conversation.user_id == user_id)
    if before is not None:
        moment, last_id = before
        query = query.where(
            or_(Conversation.updated_at < moment, and_(Conversation.updated_at == moment, Conversation.id < last_id))
        )
    query = query.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(limit)
    return session.execute(query).all()


def messages_of(session: Session, conversation_id: str) -> Sequence[Message]:
    query = select(Message).where(Message.conversation_id == conversation_id).order_by(Message.position)
    return session.scalars(query).all()


def next_position(session: Session, conversation_id: str) -> int:
    """The position after the conversation's last message (0 for an empty one)."""
    last = session.scalar(select(func.max(Message.position)).where(Message.conversation_id == conversation_id))
    return 0 if last is None else int(last) + 1


def add_messages(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert many messages in one executemany (imports, tests' large histories)."""
    if rows:
        session.execute(insert(Message), list(rows))


def delete_messages_from(session: Session, conversation_id: str, position: int) -> None:
    """Drop the tail of a conversation (regenerate, edit-and-resend)."""
    session.execute(delete(Message).where(Message.conversation_id == conversation_id, Message.position >= position))


def delete_conversation(session: Session, conversation_id: str) -> None:
    """Messages and attached files first, explicitly: the foreign keys cascade too, but SQLite enforces them
    only on connections that enabled `foreign_keys`, and a deleted conversation must take its text with it
    everywhere — its documents are the user's uploads for it, so they go with their chunks and bytes."""
    for file_id in file_ids_of(session, conversation_id):
        unlink_file(session, conversation_id, file_id)
        documents.delete_file(session, file_id)
    session.execute(delete(Message).where(Message.conversation_id == conversation_id))
    session.execute(delete(Conversation).where(Conversation.id == conversation_id))


def link_file(session: Session, conversation_id: str, file_id: str, moment: datetime) -> None:
    session.add(ConversationFile(conversation_id=conversation_id, file_id=file_id, added_at=moment))
    session.flush()


def unlink_file(session: Session, conversation_id: str, file_id: str) -> None:
    session.execute(
        delete(ConversationFile).where(
            ConversationFile.conversation_id == conversation_id, ConversationFile.file_id == file_id
        )
    )


def file_ids_of(session: Session, conversation_id: str) -> list[str]:
    """The ids of the conversation's files, in the order they were attached."""
    query = (
        select(ConversationFile.file_id)
        .where(ConversationFile.conversation_id == conversation_id)
        .order_by(ConversationFile.added_at, ConversationFile.file_id)
    )
    return list(session.scalars(query))


def files_of(session: Session, conversation_id: str) -> list[StoredFile]:
    """The conversation's files, in the order they were attached (one query)."""
    query = (
        select(StoredFile)
        .join(ConversationFile, ConversationFile.file_id == StoredFile.id)
        .where(ConversationFile.conversation_id == conversation_id)
        .order_by(ConversationFile.added_at, StoredFile.id)
    )
    return list(session.scalars(query))


def touch(session: Session, conversation_id: str, moment: datetime, **values: Any) -> None:
    session.execute(update(Conversation).where(Conversation.id == conversation_id).values(updated_at=moment, **values))


def search(session: Session, user_id: str, text: str, *, limit: int) -> Sequence[Row[str, str, str, datetime]]:
    """The user's conversations whose title contains `text` or whose messages hold all its words (as
    word prefixes, through the full-text index), newest first."""
    words = re.findall(r"\w+", text)[:_MAX_SEARCH_WORDS]
    pattern = "%" + text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    condition: ColumnElement[bool] = Conversation.title.ilike(pattern, escape="\\")
    if words:
        in_content = select(Message.conversation_id).where(_matches(session, words))
        condition = or_(condition, Conversation.id.in_(in_content))
    query = (
        select(*_LISTED)
        .where(Conversation.user_id == user_id, condition)
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(limit)
    )
    return session.execute(query).all()


def _matches(session: Session, words: list[str]) -> Any:
    """A full-text condition on `Message` for rows holding every word (as a prefix)."""
    if session.get_bind().dialect.name == "sqlite":
        expression = " ".join(f'"{word}"*' for word in words)
        matching = select(_fts.c.rowid).where(literal_column("messages_fts").op("MATCH")(expression))
        return Message.id.in_(matching)
    # The expression must be the index's own (`to_tsvector('simple', content)`) for PostgreSQL to use it.
    query = " & ".join(f"{word}:*" for word in words)
    simple: ColumnElement[Any] = literal_column("'simple'::regconfig")
    return func.to_tsvector(simple, Message.content).op("@@")(func.to_tsquery(simple, query))


def count_for_user(session: Session, user_id: str) -> tuple[int, int]:
    """(conversations, messages) of a user, for benchmarks and the settings page."""
    owned = Conversation.user_id == user_id
    conversations = session.scalar(select(func.count()).select_from(Conversation).where(owned)) or 0
    messages = session.scalar(
        select(func.count()).select_from(Message).join(Conversation).where(owned)
    ) or 0
    return int(conversations), int(messages)
