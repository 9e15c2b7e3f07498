"""Le Chat's conversations: list, create, rename, switch model or system prompt, delete, search, export.

Every call takes the acting user's id and touches that user's rows only: another user's conversation id
is answered exactly like an id that never existed (404), so ids cannot be probed. Database work runs off
the event loop.

Example::

    conversations = ConversationService(database, catalog)
    created = await conversations.create(user.id, model="smollm2")
    page = await conversations.list(user.id)          # newest first; page.next_cursor for the next one
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from galerne.catalog import Catalog
from galerne.errors import InvalidRequestError, NotFoundError
from galerne.services.grounding import Reference as SourcePassage  # what an answer was given, kept with it
from galerne.storage import conversations as store
from galerne.storage.chat_tables import Conversation, Message
from galerne.storage.database import Database
from galerne.storage.document_tables import StoredFile

MAX_TITLE_CHARS = 200
MAX_SYSTEM_PROMPT_CHARS = 20_000
PAGE_SIZE = 50
_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class ConversationItem:
    """A line of the sidebar."""

    id: str
    title: str
    model: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationPage:
    items: tuple[ConversationItem, ...]
    next_cursor: str | None  # None: this was the last page


@dataclass(frozen=True, slots=True)
class AttachedFile:
    """A document attached to a conversation; listed means processed: it is searchable."""

    id: str
    filename: str
    num_bytes: int
    num_pages: int | None
    num_chunks: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A persisted turn; assistant turns carry who wrote them, the tokens they cost, how they ended and the
    passages of the conversation's documents they were given."""

    id: int
    position: int
    role: str
    content: str
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    created_at: datetime
    references: tuple[SourcePassage, ...] = ()


@dataclass(frozen=True, slots=True)
class ConversationDetail:
    id: str
    title: str
    model: str
    system_prompt: str
    created_at: datetime
    updated_at: datetime
    messages: tuple[StoredMessage, ...]
    files: tuple[AttachedFile, ...] = ()


def not_found(conversation_id: str) -> NotFoundError:
    """The one answer for a missing conversation and for someone else's."""
    return NotFoundError(f"conversation {conversation_id!r} not found", param="conversation_id")


class ConversationService:
    def __init__(self, database: Database, catalog: Catalog, *, clock: Callable[[], datetime] | None = None) -> None:
        self._database = database
        self._catalog = catalog
        self._now = clock or (lambda: datetime.now(UTC))

    async def list(self, user_id: str, cursor: str | None = None, *, limit: int = PAGE_SIZE) -> ConversationPage:
        """One page of the user's conversations, most recently active first."""
        before = _parse_cursor(cursor)
        return await self._database.run(lambda session: _page(session, user_id, before, limit))

    async def get(self, user_id: str, conversation_id: str) -> ConversationDetail:
        return await self._database.run(lambda session: _detail(session, user_id, conversation_id))

    async def page(
        self, user_id: str, conversation_id: str | None, cursor: str | None = None
    ) -> tuple[ConversationPage, ConversationDetail | None]:
        """Everything a chat page shows, in one transaction and a fixed number of queries (four: the sidebar,
        the conversation, its messages, its files)."""
        before = _parse_cursor(cursor)

        def read(session: Any) -> tuple[ConversationPage, ConversationDetail | None]:
            listed = _page(session, user_id, before, PAGE_SIZE)
            detail = None if conversation_id is None else _detail(session, user_id, conversation_id)
            return listed, detail

        return await self._database.run(read)

    async def create(
        self, user_id: str, *, model: str | None = None, system_prompt: str = "", title: str = ""
    ) -> ConversationDetail:
        entry = self._catalog.default_entry() if not model else self._catalog.resolve(model)
        now = self._now()
        conversation = Conversation(
            id=uuid.uuid4().hex,
            user_id=user_id,
            title=_checked_title(title),
            model=entry.id,
            system_prompt=_checked_system_prompt(system_prompt),
            created_at=now,
            updated_at=now,
        )
        await self._database.run(lambda session: store.add_conversation(session, conversation))
        return ConversationDetail(
            conversation.id, conversation.title, entry.id, conversation.system_prompt, now, now, ()
        )

    async def update(
        self,
        user_id: str,
        conversation_id: str,
        *,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
    ) -> ConversationItem:
        """Rename, switch the model of the next replies, or change the system prompt."""
        values: dict[str, Any] = {}
        if title is not None:
            values["title"] = _checked_title(title)
        if model is not None:
            values["model"] = self._catalog.resolve(model).id
        if system_prompt is not None:
            values["system_prompt"] = _checked_system_prompt(system_prompt)

        def write(session: Any) -> ConversationItem:
            conversation = store.find_conversation(session, user_id, checked_id(conversation_id))
            if conversation is None:
                raise not_found(conversation_id)
            for name, value in values.items():
                setattr(conversation, name, value)
            conversation.updated_at = self._now()
            return ConversationItem(conversation.id, conversation.title, conversation.model, conversation.updated_at)

        return await self._database.run(write)

    async def delete(self, user_id: str, conversation_id: str) -> None:
        """Delete the conversation and every message in it, for good."""

        def write(session: Any) -> None:
            if store.find_conversation(session, user_id, checked_id(conversation_id)) is None:
                raise not_found(conversation_id)
            store.delete_conversation(session, conversation_id)

        await self._database.run(write)

    async def search(self, user_id: str, text: str, *, limit: int = PAGE_SIZE) -> tuple[ConversationItem, ...]:
        """Conversations whose title contains `text` or whose messages contain all its words."""
        if not text.strip():
            return ()
        checked_text(text, "q")
        if len(text) > 200:
            raise InvalidRequestError("a search is at most 200 characters", param="q")
        rows = await self._database.run(lambda session: store.search(session, user_id, text, limit=limit))
        return tuple(ConversationItem(row.id, row.title, row.model, row.updated_at) for row in rows)

    async def export_json(self, user_id: str, conversation_id: str) -> dict[str, Any]:
        """The whole conversation as plain JSON (dates in ISO 8601), for backups and other tools."""
        detail = await self.get(user_id, conversation_id)
        exported = asdict(detail)
        exported["created_at"] = detail.created_at.isoformat()
        exported["updated_at"] = detail.updated_at.isoformat()
        for item in [*exported["messages"], *exported["files"]]:
            item["created_at"] = item["created_at"].isoformat()
        result: dict[str, Any] = json.loads(json.dumps(exported))
        return result

    async def export_markdown(self, user_id: str, conversation_id: str) -> str:
        """The conversation as a Markdown document: a heading per turn, the text as it was written."""
        detail = await self.get(user_id, conversation_id)
        lines = [f"# {detail.title or 'Conversation'}", "", f"- model: {detail.model}",
                 f"- created: {detail.created_at.isoformat()}"]
        if detail.files:
            lines.append(f"- documents: {', '.join(attached.filename for attached in detail.files)}")
        lines.append("")
        if detail.system_prompt:
            lines += ["## System", "", detail.system_prompt, ""]
        for message in detail.messages:
            heading = "User" if message.role == "user" else f"Assistant ({message.model or detail.model})"
            if message.finish_reason == "cancelled":
                heading += " — stopped"
            lines += [f"## {heading}", "", message.content, ""]
            if message.references:
                lines += ["Sources:", ""]
                lines += [f"- [{source.id}] {source.filename}{_pages(source)}, score {source.score:.2f}"
                          for source in message.references]
                lines.append("")
        return "\n".join(lines)


def _page(session: Any, user_id: str, before: tuple[datetime, str] | None, limit: int) -> ConversationPage:
    rows = store.list_page(session, user_id, limit=limit + 1, before=before)
    items = tuple(ConversationItem(row.id, row.title, row.model, row.updated_at) for row in rows[:limit])
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = f"{last.updated_at.isoformat()}~{last.id}"
    return ConversationPage(items, next_cursor)


def _detail(session: Any, user_id: str, conversation_id: str) -> ConversationDetail:
    conversation = store.find_conversation(session, user_id, checked_id(conversation_id))
    if conversation is None:
        raise not_found(conversation_id)
    messages = tuple(stored_message(row) for row in store.messages_of(session, conversation_id))
    files = tuple(attached_file(row) for row in store.files_of(session, conversation_id))
    return ConversationDetail(
        conversation.id,
        conversation.title,
        conversation.model,
        conversation.system_prompt,
        conversation.created_at,
        conversation.updated_at,
        messages,
        files,
    )


def stored_message(row: Message) -> StoredMessage:
    references = tuple(SourcePassage(**reference) for reference in row.references or ())
    return StoredMessage(
        row.id, row.position, row.role, row.content, row.model, row.prompt_tokens, row.completion_tokens,
        row.finish_reason, row.created_at, references,
    )


def _pages(source: SourcePassage) -> str:
    if source.page_start is None:
        return ""
    if source.page_end is None or source.page_end == source.page_start:
        return f", page {source.page_start}"
    return f", pages {source.page_start}-{source.page_end}"


def attached_file(row: StoredFile) -> AttachedFile:
    return AttachedFile(row.id, row.filename, row.num_bytes, row.num_pages, row.num_chunks, row.created_at)


def _parse_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    moment, _, last_id = cursor.partition("~")
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        parsed = None
    if parsed is None or not last_id or parsed.tzinfo is None:
        raise InvalidRequestError("the page cursor is malformed; start again from the first page", param="cursor")
    return parsed, last_id


def checked_id(conversation_id: str) -> str:
    """Ids are 32 hex digits; anything else cannot exist (and must not reach the database: PostgreSQL
    refuses NUL bytes with an error, not an empty result)."""
    if not _ID.fullmatch(conversation_id):
        raise not_found(conversation_id[:40])
    return conversation_id


def checked_text(text: str, param: str) -> str:
    if "\x00" in text:
        raise InvalidRequestError("text may not contain NUL characters", param=param)
    return text


def _checked_title(title: str) -> str:
    title = " ".join(checked_text(title, "title").split())
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidRequestError(f"a title is at most {MAX_TITLE_CHARS} characters", param="title")
    return title


def _checked_system_prompt(prompt: str) -> str:
    checked_text(prompt, "system_prompt")
    if len(prompt) > MAX_SYSTEM_PROMPT_CHARS:
        raise InvalidRequestError(
            f"a system prompt is at most {MAX_SYSTEM_PROMPT_CHARS} characters", param="system_prompt"
        )
    return prompt
