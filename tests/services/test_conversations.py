"""Conversations on SQLite and PostgreSQL: paging, renaming, deleting for good, search, export, and
another user's conversation answered exactly like one that does not exist."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select, text

from galerne.catalog import default_catalog
from galerne.errors import InvalidRequestError, ModelNotFoundError, NotFoundError
from galerne.services.conversations import ConversationService
from galerne.storage.chat_tables import Message
from galerne.storage.database import Database
from tests.services.chat_history import add_history, add_user


@pytest.fixture
def service(database: Database) -> ConversationService:
    return ConversationService(database, default_catalog())


def _messages_of(database: Database, conversation_id: str) -> int:
    with database.session() as session:
        return int(session.scalar(
            select(func.count()).select_from(Message).where(Message.conversation_id == conversation_id)
        ) or 0)


async def test_list_is_newest_first_and_pages_by_keyset(service: ConversationService, database: Database) -> None:
    user = add_user(database)
    ids = add_history(database, user, num_conversations=7, messages_each=2)
    first = await service.list(user, limit=3)
    assert [item.id for item in first.items] == ids[:3] and first.next_cursor
    second = await service.list(user, first.next_cursor, limit=3)
    third = await service.list(user, second.next_cursor, limit=3)
    assert [item.id for item in second.items + third.items] == ids[3:]
    assert third.next_cursor is None
    with pytest.raises(InvalidRequestError):
        await service.list(user, "not-a-cursor")


async def test_create_rename_switch_model_and_system_prompt(service: ConversationService, database: Database) -> None:
    user = add_user(database)
    created = await service.create(user, system_prompt="Answer in French.")
    entry = default_catalog().default_entry()
    assert created.model == entry.id and created.title == ""
    renamed = await service.update(user, created.id, title="  Trip   to Rome ", model=entry.id)
    assert renamed.title == "Trip to Rome"
    detail = await service.get(user, created.id)
    assert detail.system_prompt == "Answer in French." and detail.title == "Trip to Rome"
    with pytest.raises(ModelNotFoundError):
        await service.update(user, created.id, model="no-such-model")
    with pytest.raises(InvalidRequestError):
        await service.update(user, created.id, title="x" * 201)
    with pytest.raises(InvalidRequestError):
        await service.update(user, created.id, title="nul\x00byte")


async def test_another_users_conversation_is_not_found_for_every_operation(
    service: ConversationService, database: Database
) -> None:
    owner, intruder = add_user(database), add_user(database)
    [conversation_id] = add_history(database, owner, num_conversations=1, messages_each=4)
    for attempt in (
        service.get(intruder, conversation_id),
        service.update(intruder, conversation_id, title="mine now"),
        service.delete(intruder, conversation_id),
        service.export_markdown(intruder, conversation_id),
        service.export_json(intruder, conversation_id),
    ):
        with pytest.raises(NotFoundError) as info:
            await attempt
        assert info.value.status == 404 and "not found" in info.value.message
    for malformed in ("../etc", "x" * 500, "a\x00b", uuid.uuid4().hex.upper()):
        with pytest.raises(NotFoundError):
            await service.get(owner, malformed)
    assert (await service.get(owner, conversation_id)).title == "Conversation 0"
    assert _messages_of(database, conversation_id) == 4
    assert await service.search(intruder, "Conversation") == ()


async def test_delete_removes_every_message_and_the_search_index_entries(
    service: ConversationService, database: Database
) -> None:
    user = add_user(database)
    kept, deleted = add_history(database, user, num_conversations=2, messages_each=6)
    assert _messages_of(database, deleted) == 6
    await service.delete(user, deleted)
    assert _messages_of(database, deleted) == 0
    with pytest.raises(NotFoundError):
        await service.get(user, deleted)
    assert _messages_of(database, kept) == 6
    if database.engine.dialect.name == "sqlite":  # the FTS5 shadow rows went with the messages
        with database.session() as session:
            indexed = session.scalar(text("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'message'"))
        assert indexed == 6
    with pytest.raises(NotFoundError):
        await service.delete(user, deleted)


async def test_search_by_title_and_by_words_in_messages(service: ConversationService, database: Database) -> None:
    user, other = add_user(database), add_user(database)
    ids = add_history(database, user, num_conversations=5, messages_each=2)  # newest first: index 4 .. 0
    add_history(database, other, num_conversations=5, messages_each=2)
    by_title = await service.search(user, "Conversation 3")
    assert [item.id for item in by_title] == [ids[1]]
    by_word = await service.search(user, "topic2")
    assert [item.id for item in by_word] == [ids[2]]
    by_prefix = await service.search(user, "topi")  # words are matched as prefixes
    assert {item.id for item in by_prefix} == set(ids)
    assert await service.search(user, "topic2 absentword") == ()
    assert await service.search(user, "   ") == ()
    assert await service.search(user, '"; DROP TABLE messages; -- %_*') == ()  # FTS syntax and LIKE wildcards
    assert len(await service.search(user, "message")) == 5


async def test_export_markdown_and_json(service: ConversationService, database: Database) -> None:
    user = add_user(database)
    [conversation_id] = add_history(database, user, num_conversations=1, messages_each=2)
    markdown = await service.export_markdown(user, conversation_id)
    assert markdown.startswith("# Conversation 0\n")
    assert "## User\n\nmessage 0 of conversation 0" in markdown and "## Assistant (smollm2)" in markdown
    exported = await service.export_json(user, conversation_id)
    assert json.loads(json.dumps(exported)) == exported
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant"]
    assert exported["id"] == conversation_id and exported["messages"][1]["finish_reason"] == "stop"
