"""Helpers for tests of Le Chat's history: users, and large histories inserted in bulk."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from galerne.storage.chat_tables import Conversation
from galerne.storage.conversations import add_messages
from galerne.storage.database import Database
from galerne.storage.tables import User


def add_user(database: Database, email: str | None = None) -> str:
    user_id = uuid.uuid4().hex
    with database.session() as session:
        session.add(User(id=user_id, email=email or f"{user_id}@example.org", created_at=datetime.now(UTC)))
    return user_id


def add_history(database: Database, user_id: str, *, num_conversations: int, messages_each: int) -> list[str]:
    """`num_conversations` conversations of `messages_each` messages (alternating user/assistant), inserted
    with executemany in batches: 50,000 messages take seconds, not minutes. Returns the ids, newest first."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [uuid.uuid4().hex for _ in range(num_conversations)]
    conversations = [
        {"id": conversation_id, "user_id": user_id, "title": f"Conversation {index}", "model": "smollm2",
         "system_prompt": "", "created_at": start + timedelta(minutes=index),
         "updated_at": start + timedelta(minutes=index)}
        for index, conversation_id in enumerate(ids)
    ]
    with database.session() as session:
        session.execute(insert(Conversation), conversations)
    batch: list[dict[str, object]] = []
    for index, conversation_id in enumerate(ids):
        for position in range(messages_each):
            role = "user" if position % 2 == 0 else "assistant"
            batch.append({
                "conversation_id": conversation_id, "position": position, "role": role,
                "content": f"message {position} of conversation {index}: some words about topic{index % 97}",
                "model": None if role == "user" else "smollm2", "prompt_tokens": None, "completion_tokens": None,
                "finish_reason": None if role == "user" else "stop", "created_at": start,
            })
        if len(batch) >= 10_000 or index == len(ids) - 1:
            with database.session() as session:
                add_messages(session, batch)
            batch = []
    return list(reversed(ids))
