"""Le Chat's replies: a user's message in, the assistant's answer streamed out and kept.

A reply runs through the very `ChatService` path the API uses — the same model resolution, admission,
rate limits, budgets, metering and engine — under the user's `Principal`, so a web user is limited and
billed like an API key of the same project. The user's message is stored before generation starts (a
refused or failed reply loses nothing the user typed: they retry with `regenerate`); the assistant's
message is stored when generation ends, however it ends: finished, stopped by the user, or cut off by a
client that left (then marked `cancelled`, with whatever was generated).

A conversation's attached documents (`AttachmentService`) go with every request as file chunks of its last
user message, so `ChatService` grounds the reply in them (whole when they fit, the best passages otherwise);
the passages it was given are stored with the assistant's message and shown as its sources.

Example::

    reply = await replies.send(principal, user.id, conversation_id, "Bonjour !")
    async for event in reply.events():
        ...  # ReplyText(text=...) as tokens come, then ReplyDone(message=...)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from galerne.catalog import Catalog
from galerne.errors import GalerneError, InvalidRequestError
from galerne.protocol import chat as wire
from galerne.services.auth import Principal
from galerne.services.chat import ChatRun, ChatService
from galerne.services.conversations import StoredMessage, checked_id, checked_text, not_found, stored_message
from galerne.storage import conversations as store
from galerne.storage.chat_tables import Conversation, Message
from galerne.storage.database import Database

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 100_000
_TITLE_CHARS = 60


@dataclass(frozen=True, slots=True)
class ReplyText:
    text: str


@dataclass(frozen=True, slots=True)
class ReplyDone:
    message: StoredMessage


ReplyEvent = ReplyText | ReplyDone


@dataclass(frozen=True, slots=True)
class _Turn:
    """What generation needs from the database: the conversation's settings and its history."""

    conversation_id: str
    model: str
    system_prompt: str
    history: tuple[tuple[str, str], ...]  # (role, content), the user's message last
    user_message: StoredMessage | None
    file_ids: tuple[str, ...] = ()  # the conversation's documents


class Reply:
    """One assistant message being generated. Iterate `events()` once; `stop()` cancels it on the server."""

    def __init__(self, service: ReplyService, run: ChatRun, chunks: AsyncIterator[wire.ChatCompletionChunk],
                 turn: _Turn) -> None:
        self._service = service
        self._run = run
        self._chunks = chunks
        self._turn = turn
        self._parts: list[str] = []
        self._is_stopped = False
        self._is_finished = False
        self.model = run.model
        self.conversation_id = turn.conversation_id
        self.user_message = turn.user_message

    async def events(self) -> AsyncIterator[ReplyEvent]:
        finish: str | None = None
        try:
            async for chunk in self._chunks:
                for choice in chunk.choices:
                    if choice.delta.content:
                        self._parts.append(choice.delta.content)
                        yield ReplyText(choice.delta.content)
                    if choice.finish_reason is not None:
                        finish = choice.finish_reason
        except GalerneError:
            self.close("error")
            raise
        except BaseException:  # the client left (the stream was closed or cancelled)
            self.close("cancelled")
            raise
        if self._is_stopped or finish is None:
            finish = "cancelled"
        saved = await self._service._save(self, finish)
        yield ReplyDone(saved)

    def stop(self) -> None:
        """Cancel generation now (its slot is freed at the engine's next step); what was generated is kept."""
        self._is_stopped = True
        self._service._chat.abandon(self._run)

    def close(self, finish: str = "cancelled") -> None:
        """End a reply nobody reads any more: cancel generation and store what there is, in the background.

        Safe to call more than once and after `events()` finished (then it does nothing)."""
        if self._is_finished:
            return
        self._service._chat.abandon(self._run)
        self._service._save_in_background(self, finish)

    def _message_row(self, finish: str, now: datetime) -> Message:
        usage = self._run.usage()
        references = self._run.references
        return Message(
            conversation_id=self._turn.conversation_id,
            position=0,  # set when stored: after whatever the conversation holds by then
            role="assistant",
            content="".join(self._parts),
            model=self._run.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            finish_reason=finish,
            created_at=now,
            references=None if references is None else [reference.model_dump() for reference in references],
        )


class ReplyService:
    def __init__(self, database: Database, chat: ChatService, catalog: Catalog, *,
                 max_tokens: int | None = None, clock: Callable[[], datetime] | None = None) -> None:
        """`max_tokens` caps each reply (None: what the model's context leaves)."""
        self._max_tokens = max_tokens
        self._database = database
        self._chat = chat
        self._catalog = catalog
        self._now = clock or (lambda: datetime.now(UTC))
        self._running: dict[tuple[str, str], Reply] = {}
        self._saving: set[asyncio.Task[StoredMessage | None]] = set()

    async def send(
        self, principal: Principal, user_id: str, conversation_id: str, content: str, *, model: str | None = None
    ) -> Reply:
        """Store the user's message, then start the reply (4xx before anything streams: 404, 429, ...)."""
        text = _checked_message(content)
        model_id = self._model(principal, model)
        turn = await self._database.run(lambda session: self._append(session, user_id, conversation_id, text, model_id))
        return await self._start(principal, user_id, turn)

    async def regenerate(
        self, principal: Principal, user_id: str, conversation_id: str, *, model: str | None = None
    ) -> Reply:
        """Answer the last user message again (also the retry after a failed or refused reply)."""
        model_id = self._model(principal, model)
        turn = await self._database.run(lambda session: self._rewind(session, user_id, conversation_id, None, model_id))
        return await self._start(principal, user_id, turn)

    async def edit_last(
        self, principal: Principal, user_id: str, conversation_id: str, content: str, *, model: str | None = None
    ) -> Reply:
        """Replace the last user message and answer it anew; the replies after it are dropped."""
        text = _checked_message(content)
        model_id = self._model(principal, model)
        turn = await self._database.run(lambda session: self._rewind(session, user_id, conversation_id, text, model_id))
        return await self._start(principal, user_id, turn)

    def stop(self, user_id: str, conversation_id: str) -> bool:
        """Stop the user's running reply in this conversation (on this server); False when none runs."""
        reply = self._running.get((user_id, conversation_id))
        if reply is None:
            return False
        reply.stop()
        return True

    async def drain(self) -> None:
        """Wait for the background saves of replies whose client left (tests, shutdown)."""
        while self._saving:
            await asyncio.gather(*list(self._saving), return_exceptions=True)

    def _model(self, principal: Principal, model: str | None) -> str | None:
        return None if not model else self._catalog.resolve(model, is_visible=principal.may_use).id

    async def _start(self, principal: Principal, user_id: str, turn: _Turn) -> Reply:
        messages: list[dict[str, Any]] = []
        if turn.system_prompt:
            messages.append({"role": "system", "content": turn.system_prompt})
        messages += [{"role": role, "content": content} for role, content in turn.history]
        if turn.file_ids:
            last = messages[-1]
            last["content"] = [
                {"type": "text", "text": last["content"]},
                *({"type": "file", "file_id": file_id} for file_id in turn.file_ids),
            ]
        body: dict[str, Any] = {"model": turn.model, "messages": messages, "stream": True}
        if self._max_tokens is not None:
            body["max_tokens"] = self._max_tokens
        request = wire.ChatCompletionRequest.model_validate(body)
        run = await self._chat.start(request, principal, is_chat_app=True)
        try:
            chunks = await self._chat.stream(run)
        except BaseException:
            self._chat.abandon(run)
            raise
        reply = Reply(self, run, chunks, turn)
        key = (user_id, turn.conversation_id)
        previous = self._running.get(key)
        if previous is not None:
            previous.stop()
        self._running[key] = reply
        return reply

    async def _save(self, reply: Reply, finish: str) -> StoredMessage:
        reply._is_finished = True
        self._forget(reply)
        now = self._now()
        row = reply._message_row(finish, now)
        return await asyncio.to_thread(self._store, row, now)

    def _save_in_background(self, reply: Reply, finish: str) -> None:
        """A cancelled task cannot await its own write: the write runs in a task of its own."""
        reply._is_finished = True
        self._forget(reply)
        now = self._now()
        row = reply._message_row(finish, now)
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._store_quietly, row, now))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    def _forget(self, reply: Reply) -> None:
        for key, running in list(self._running.items()):
            if running is reply:
                del self._running[key]

    def _store(self, row: Message, now: datetime) -> StoredMessage:
        with self._database.session() as session:
            row.position = store.next_position(session, row.conversation_id)
            session.add(row)
            store.touch(session, row.conversation_id, now)
            session.flush()
            return stored_message(row)

    def _store_quietly(self, row: Message, now: datetime) -> StoredMessage | None:
        try:
            return self._store(row, now)
        except Exception:  # the conversation was deleted meanwhile, or the database is down: logged, not raised
            logger.exception("could not store a cut-off reply of conversation %s", row.conversation_id)
            return None

    def _append(self, session: Any, user_id: str, conversation_id: str, text: str, model: str | None) -> _Turn:
        conversation = _owned(session, user_id, conversation_id)
        history = list(store.messages_of(session, conversation_id))
        now = self._now()
        position = history[-1].position + 1 if history else 0
        row = Message(conversation_id=conversation_id, position=position, role="user", content=text, created_at=now)
        session.add(row)
        values: dict[str, Any] = {}
        if model is not None:
            values["model"] = model
        if not conversation.title:
            values["title"] = _title_from(text)
        store.touch(session, conversation_id, now, **values)
        session.flush()
        file_ids = store.file_ids_of(session, conversation_id)
        return _turn(conversation, [*history, row], model, stored_message(row), file_ids)

    def _rewind(
        self, session: Any, user_id: str, conversation_id: str, text: str | None, model: str | None
    ) -> _Turn:
        conversation = _owned(session, user_id, conversation_id)
        history = list(store.messages_of(session, conversation_id))
        last_user = next((m for m in reversed(history) if m.role == "user"), None)
        if last_user is None:
            raise InvalidRequestError("this conversation has no message to answer yet; send one first")
        store.delete_messages_from(session, conversation_id, last_user.position + 1)
        if text is not None:
            last_user.content = text
        now = self._now()
        store.touch(session, conversation_id, now, **({"model": model} if model is not None else {}))
        session.flush()
        kept = [m for m in history if m.position <= last_user.position]
        user_message = stored_message(last_user) if text is not None else None
        return _turn(conversation, kept, model, user_message, store.file_ids_of(session, conversation_id))


def _owned(session: Any, user_id: str, conversation_id: str) -> Conversation:
    conversation = store.find_conversation(session, user_id, checked_id(conversation_id))
    if conversation is None:
        raise not_found(conversation_id)
    return conversation


def _turn(conversation: Conversation, history: list[Message], model: str | None,
          user_message: StoredMessage | None, file_ids: list[str]) -> _Turn:
    """Stopped or failed replies stay in the history the user sees, but only finished ones are sent back to
    the model (an empty cancelled turn would teach it nothing)."""
    sent = tuple((m.role, m.content) for m in history if m.role == "user" or (m.content and m.finish_reason != "error"))
    return _Turn(
        conversation.id, model or conversation.model, conversation.system_prompt, sent, user_message, tuple(file_ids)
    )


def _checked_message(content: str) -> str:
    checked_text(content, "content")
    if not content.strip():
        raise InvalidRequestError("the message is empty", param="content")
    if len(content) > MAX_MESSAGE_CHARS:
        raise InvalidRequestError(f"a message is at most {MAX_MESSAGE_CHARS} characters", param="content")
    return content


def _title_from(text: str) -> str:
    words = " ".join(text.split())
    return words if len(words) <= _TITLE_CHARS else words[: _TITLE_CHARS - 1].rstrip() + "…"

