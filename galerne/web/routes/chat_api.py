"""`/chat/api/*`: the JSON and streaming endpoints behind the conversation pages.

Every route acts as the logged-in user (`CurrentUser`: 401 JSON without a session) and on that user's
conversations only; every state-changing one needs the session's CSRF token (`mount_web` installs the
check on the whole router: 403 without it).
Errors are la Plateforme's error body with its status (404 for another user's conversation, 429 with
Retry-After, ...), mapped by the app's one error handler. Replies stream as server-sent events
(`galerne.web.streaming`).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from galerne.services.conversations import ConversationDetail, ConversationItem, ConversationPage
from galerne.services.replies import Reply
from galerne.web.auth import CurrentPrincipal, CurrentUser
from galerne.web.routes.attachments import file_json
from galerne.web.runtime import WebRuntimeDep
from galerne.web.streaming import ReplyResponse, message_json

router = APIRouter(prefix="/chat/api", include_in_schema=False)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewConversation(_Body):
    model: str | None = Field(default=None, max_length=128)
    system_prompt: str = Field(default="", max_length=20_000)
    title: str = Field(default="", max_length=200)


class ConversationChange(_Body):
    title: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=128)
    system_prompt: str | None = Field(default=None, max_length=20_000)


class NewMessage(_Body):
    content: str = Field(max_length=100_000)
    model: str | None = Field(default=None, max_length=128)


class Regenerate(_Body):
    model: str | None = Field(default=None, max_length=128)


def item_json(item: ConversationItem) -> dict[str, Any]:
    return {"id": item.id, "title": item.title, "model": item.model, "updated_at": item.updated_at.isoformat()}


def page_json(page: ConversationPage) -> dict[str, Any]:
    return {"data": [item_json(item) for item in page.items], "next_cursor": page.next_cursor}


def detail_json(detail: ConversationDetail) -> dict[str, Any]:
    return {
        "id": detail.id, "title": detail.title, "model": detail.model, "system_prompt": detail.system_prompt,
        "created_at": detail.created_at.isoformat(), "updated_at": detail.updated_at.isoformat(),
        "messages": [message_json(message) for message in detail.messages],
        "files": [file_json(attached) for attached in detail.files],
    }


@router.get("/conversations")
async def list_conversations(user: CurrentUser, chat: WebRuntimeDep, cursor: str | None = None) -> dict[str, Any]:
    return page_json(await chat.conversations.list(user.id, cursor))


@router.post("/conversations", status_code=201)
async def create_conversation(
    body: NewConversation, user: CurrentUser, principal: CurrentPrincipal, chat: WebRuntimeDep
) -> dict[str, Any]:
    model = body.model and chat.registry.catalog.resolve(body.model, is_visible=principal.may_use).id
    created = await chat.conversations.create(user.id, model=model, system_prompt=body.system_prompt,
                                              title=body.title)
    return detail_json(created)


@router.get("/conversations/{conversation_id}")
async def get_conversation(conversation_id: str, user: CurrentUser, chat: WebRuntimeDep) -> dict[str, Any]:
    return detail_json(await chat.conversations.get(user.id, conversation_id))


@router.patch("/conversations/{conversation_id}")
async def change_conversation(
    conversation_id: str, body: ConversationChange, user: CurrentUser, principal: CurrentPrincipal,
    chat: WebRuntimeDep,
) -> dict[str, Any]:
    """Rename, switch the model of the next replies, or change the system prompt."""
    model = body.model
    if model is not None:
        model = chat.registry.catalog.resolve(model, is_visible=principal.may_use).id
    item = await chat.conversations.update(
        user.id, conversation_id, title=body.title, model=model, system_prompt=body.system_prompt
    )
    return item_json(item)


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: str, user: CurrentUser, chat: WebRuntimeDep) -> Response:
    chat.replies.stop(user.id, conversation_id)
    await chat.conversations.delete(user.id, conversation_id)
    return Response(status_code=204)


@router.get("/conversations/{conversation_id}/export")
async def export_conversation(
    conversation_id: str, user: CurrentUser, chat: WebRuntimeDep, format: Literal["md", "json"] = Query("md")
) -> Response:
    """A download: Markdown (`format=md`) or JSON (`format=json`)."""
    filename = f"conversation-{conversation_id[:32]}.{format}"
    disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if format == "json":
        exported = await chat.conversations.export_json(user.id, conversation_id)
        return Response(json.dumps(exported, ensure_ascii=False, indent=2), media_type="application/json",
                        headers=disposition)
    text = await chat.conversations.export_markdown(user.id, conversation_id)
    return Response(text, media_type="text/markdown; charset=utf-8", headers=disposition)


@router.get("/search")
async def search(user: CurrentUser, chat: WebRuntimeDep, q: str = Query("", max_length=200)) -> dict[str, Any]:
    found = await chat.conversations.search(user.id, q)
    return {"data": [item_json(item) for item in found], "next_cursor": None}


@router.post("/conversations/{conversation_id}/messages")
async def send_message(
    conversation_id: str, body: NewMessage, user: CurrentUser, principal: CurrentPrincipal, chat: WebRuntimeDep
) -> Response:
    """Send a message and stream the reply (errors before the first token keep their own status)."""
    reply = await chat.replies.send(principal, user.id, conversation_id, body.content, model=body.model)
    return _stream(reply)


@router.post("/conversations/{conversation_id}/regenerate")
async def regenerate(
    conversation_id: str, body: Regenerate, user: CurrentUser, principal: CurrentPrincipal, chat: WebRuntimeDep
) -> Response:
    """Answer the last user message again (also the retry after an error)."""
    return _stream(await chat.replies.regenerate(principal, user.id, conversation_id, model=body.model))


@router.post("/conversations/{conversation_id}/edit")
async def edit_last(
    conversation_id: str, body: NewMessage, user: CurrentUser, principal: CurrentPrincipal, chat: WebRuntimeDep
) -> Response:
    """Replace the last user message and answer it anew."""
    reply = await chat.replies.edit_last(principal, user.id, conversation_id, body.content, model=body.model)
    return _stream(reply)


@router.post("/conversations/{conversation_id}/stop")
async def stop(conversation_id: str, user: CurrentUser, chat: WebRuntimeDep) -> dict[str, bool]:
    """Cancel the running reply on the server; what it generated so far is kept, marked as stopped."""
    return {"stopped": chat.replies.stop(user.id, conversation_id)}


def _stream(reply: Reply) -> Response:
    return ReplyResponse(reply, on_close=reply.close)
