"""A whole page load — session lookup included — makes the same small number of SQL queries for a user with
one short conversation and for a user with 1,000 conversations and 50,000 messages, on SQLite and
PostgreSQL. The app runs in-process (Starlette's TestClient, real lifespan, real model) so every statement
any engine sends is counted with SQLAlchemy's `before_cursor_execute` event."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from galerne.api.app import create_app
from galerne.config import Settings
from galerne.storage.database import Database
from tests.databases import fresh_database_url
from tests.services.chat_history import add_history
from tests.web.conftest import PASSWORD, csrf_of


@contextmanager
def counted() -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def _log_in(client: TestClient, email: str) -> None:
    token = csrf_of(client.get("/chat/login").text)
    response = client.post("/chat/login", data={"email": email, "password": PASSWORD, "csrf_token": token},
                           follow_redirects=False)
    assert response.status_code == 303, response.text


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_page_loads_make_the_same_few_queries_whatever_the_history(kind: str, tmp_path: Path) -> None:
    with fresh_database_url(kind, tmp_path) as url:
        settings = Settings(home=tmp_path / "home", database_url=url, signup="open", usage_journal=False)
        app = create_app(settings)
        with TestClient(app) as client:
            users = app.state.web.users
            small = users.create("small@example.org", PASSWORD)
            large = users.create("large@example.org", PASSWORD)
            database = Database.open(url)
            [small_id] = add_history(database, small.id, num_conversations=1, messages_each=2)
            large_ids = add_history(database, large.id, num_conversations=1_000, messages_each=50)
            database.close()
            counts = {}
            for email, conversation_id in (("small@example.org", small_id), ("large@example.org", large_ids[500])):
                client.cookies.clear()
                _log_in(client, email)
                pages = {"conversation": f"/chat/c/{conversation_id}", "new chat": "/chat",
                         "search": "/chat/search?q=topic5"}
                for name, path in pages.items():
                    assert client.get(path).status_code == 200  # warm: a session's first use may record it
                    with counted() as statements:
                        response = client.get(path)
                    assert response.status_code == 200
                    counts[(email, name)] = len(statements)
                page = client.get(f"/chat/c/{conversation_id}").text
                assert page.count('class="message ') in {2, 50}
    by_page = {page: {count for (_, name), count in counts.items() if name == page} for _, page in counts}
    assert all(len(values) == 1 for values in by_page.values()), counts  # the same for both users
    assert counts[("large@example.org", "conversation")] == 5, counts  # session, sidebar, conversation, messages, files
    assert counts[("large@example.org", "new chat")] == 2, counts  # session, sidebar page
    assert counts[("large@example.org", "search")] == 2, counts  # session, search
