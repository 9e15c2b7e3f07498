"""The service calls behind Le Chat's pages: one statement per part of a page, whatever the history.

Open WebUI's best-known complaint (open-webui#10807) is 60-100 queries and 10-15 s per page for a long
history on PostgreSQL. The statements each call makes are counted with SQLAlchemy's
`before_cursor_execute` event and asserted exactly, on SQLite and PostgreSQL; the whole page loads, with
the session lookup and a user holding 1,000 conversations and 50,000 messages, are counted in
`tests/web/test_page_queries.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from galerne.catalog import default_catalog
from galerne.services.conversations import ConversationService
from galerne.storage.database import Database
from tests.services.chat_history import add_history, add_user

NUM_CONVERSATIONS = 240
MESSAGES_EACH = 20


@contextmanager
def counted(database: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


@pytest.mark.timeout(900)
async def test_each_part_of_a_page_is_one_query(database: Database) -> None:
    user = add_user(database)
    ids = add_history(database, user, num_conversations=NUM_CONVERSATIONS, messages_each=MESSAGES_EACH)
    add_history(database, add_user(database), num_conversations=50, messages_each=10)  # someone else's
    service = ConversationService(database, default_catalog())
    await service.page(user, ids[0])  # warm the pool: a first connection runs set-up statements of its own

    with counted(database) as statements:
        page, detail = await service.page(user, ids[120])
    assert len(statements) == 4, statements  # the list, the conversation, its messages, its documents
    assert detail is not None and len(detail.messages) == MESSAGES_EACH
    assert len(page.items) == 50 and page.items[0].id == ids[0]

    with counted(database) as statements:
        page, _ = await service.page(user, None, page.next_cursor)  # the sidebar's next page
    assert len(statements) == 1
    assert page.items[0].id == ids[50]

    with counted(database) as statements:
        found = await service.search(user, "topic5")
    assert len(statements) == 1
    assert found and all(item.title.startswith("Conversation ") for item in found)
