"""Replies through the real model and the same `ChatService` path as the API, stored on SQLite and
PostgreSQL: the user's message before generation, the assistant's when it ends — finished, stopped, or
left by its client — and the limits and metering of the user's project applied as to an API key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from galerne.catalog import default_catalog
from galerne.config import Settings
from galerne.errors import InvalidRequestError, NotFoundError, RateLimitExceededError
from galerne.services.admission import Admission
from galerne.services.auth import Principal
from galerne.services.chat import ChatService
from galerne.services.conversations import ConversationService
from galerne.services.limits import InProcessLimiter, RateLimits
from galerne.services.metering import UsageMeter
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry
from galerne.services.replies import Reply, ReplyDone, ReplyService, ReplyText
from galerne.storage.database import Database
from galerne.storage.tables import UsageRecord
from tests.services.chat_history import add_user

PRINCIPAL = Principal(key_id=None, project_id=None, project_name="chat")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelRegistry]:
    """The bundled SmolLM2, loaded once for the module."""
    loaded = ModelRegistry.load(default_catalog(), Settings(home=tmp_path_factory.mktemp("home")), Metrics())
    yield loaded
    loaded.close()


@dataclass
class Chat:
    conversations: ConversationService
    replies: ReplyService
    meter: UsageMeter
    database: Database


@pytest.fixture
def chat(database: Database, registry: ModelRegistry, tmp_path: Path) -> Iterator[Chat]:
    meter = UsageMeter(database, tmp_path / "usage-journal")
    service = ChatService(registry, Metrics(), Admission(InProcessLimiter(), meter, database))
    catalog = registry.catalog
    yield Chat(ConversationService(database, catalog), ReplyService(database, service, catalog, max_tokens=24),
               meter, database)
    meter.close()


async def _read(reply: Reply) -> tuple[str, ReplyDone]:
    text: list[str] = []
    done = None
    async for event in reply.events():
        if isinstance(event, ReplyText):
            text.append(event.text)
        else:
            done = event
    assert done is not None
    return "".join(text), done


async def test_a_reply_is_streamed_and_both_messages_are_kept(chat: Chat) -> None:
    user = add_user(chat.database)
    created = await chat.conversations.create(user, system_prompt="You are terse.")
    reply = await chat.replies.send(PRINCIPAL, user, created.id, "Name a colour.")
    stored = await chat.conversations.get(user, created.id)  # before a single token is read
    assert [(m.role, m.content) for m in stored.messages] == [("user", "Name a colour.")]
    assert stored.title == "Name a colour."
    text, done = await _read(reply)
    assert text and done.message.content == text
    assert done.message.model == reply.model and done.message.finish_reason in {"stop", "length"}
    assert done.message.prompt_tokens and done.message.completion_tokens
    stored = await chat.conversations.get(user, created.id)
    assert [m.role for m in stored.messages] == ["user", "assistant"]
    assert [m.position for m in stored.messages] == [0, 1]


async def test_stop_keeps_what_was_generated_marked_cancelled(chat: Chat) -> None:
    user = add_user(chat.database)
    created = await chat.conversations.create(user)
    replies = ReplyService(chat.database, chat.replies._chat, chat.conversations._catalog, max_tokens=400)
    reply = await replies.send(PRINCIPAL, user, created.id, "Write a long story about a lighthouse keeper.")
    events = reply.events()
    first = await anext(events)
    assert isinstance(first, ReplyText)
    assert replies.stop(user, created.id)
    rest = [event async for event in events]
    done = rest[-1]
    assert isinstance(done, ReplyDone) and done.message.finish_reason == "cancelled"
    assert done.message.completion_tokens is not None and done.message.completion_tokens < 400
    assert not replies.stop(user, created.id)  # nothing runs any more


async def test_a_client_that_leaves_still_gets_its_partial_reply_stored(chat: Chat) -> None:
    user = add_user(chat.database)
    created = await chat.conversations.create(user)
    reply = await chat.replies.send(PRINCIPAL, user, created.id, "Count from one to twenty.")
    events: AsyncIterator[object] = reply.events()
    await anext(events)
    await events.aclose()  # what Starlette does when the browser goes away
    await chat.replies.drain()
    stored = await chat.conversations.get(user, created.id)
    assert [(m.role, m.finish_reason) for m in stored.messages] == [("user", None), ("assistant", "cancelled")]


async def test_regenerate_and_edit_replace_the_tail(chat: Chat) -> None:
    user = add_user(chat.database)
    created = await chat.conversations.create(user)
    with pytest.raises(InvalidRequestError):
        await chat.replies.regenerate(PRINCIPAL, user, created.id)
    await _read(await chat.replies.send(PRINCIPAL, user, created.id, "Say hello."))
    await _read(await chat.replies.regenerate(PRINCIPAL, user, created.id))
    stored = await chat.conversations.get(user, created.id)
    assert [m.role for m in stored.messages] == ["user", "assistant"]
    await _read(await chat.replies.edit_last(PRINCIPAL, user, created.id, "Say goodbye."))
    stored = await chat.conversations.get(user, created.id)
    assert [(m.role, m.content if m.role == "user" else "") for m in stored.messages] == [
        ("user", "Say goodbye."), ("assistant", "")]  # fmt: skip


async def test_another_users_conversation_cannot_be_answered(chat: Chat) -> None:
    owner, intruder = add_user(chat.database), add_user(chat.database)
    created = await chat.conversations.create(owner)
    for attempt in (
        chat.replies.send(PRINCIPAL, intruder, created.id, "hi"),
        chat.replies.regenerate(PRINCIPAL, intruder, created.id),
        chat.replies.edit_last(PRINCIPAL, intruder, created.id, "hi"),
    ):
        with pytest.raises(NotFoundError):
            await attempt
    assert (await chat.conversations.get(owner, created.id)).messages == ()


async def test_the_users_project_limits_and_metering_apply(chat: Chat) -> None:
    """The same admission as an API key: a project at 1 request/minute gets a 429 on the second reply, with
    the user's message kept for the retry; usage is recorded under the project."""
    user = add_user(chat.database)
    limited = Principal(key_id=None, project_id="p-chat", project_name="chat",
                        limits=RateLimits(requests_per_minute=1))
    created = await chat.conversations.create(user)
    await _read(await chat.replies.send(limited, user, created.id, "One."))
    with pytest.raises(RateLimitExceededError) as info:
        await chat.replies.send(limited, user, created.id, "Two.")
    assert info.value.retry_after and info.value.retry_after >= 1
    stored = await chat.conversations.get(user, created.id)
    assert [m.content for m in stored.messages if m.role == "user"] == ["One.", "Two."]
    chat.meter.close()  # flushes
    with chat.database.session() as session:
        records = session.scalars(select(UsageRecord).where(UsageRecord.project_id == "p-chat")).all()
    assert len(records) == 1 and records[0].completion_tokens > 0
