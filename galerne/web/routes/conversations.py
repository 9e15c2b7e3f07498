"""The conversation pages: `/chat` (a new chat), `/chat/c/{id}` (one conversation), `/chat/search`.

A page is read in one service call (`ConversationService.page`: the sidebar's page of conversations and
the open conversation with its messages, a fixed number of queries whatever the history), rendered on the
server with sanitised Markdown; `static/chat.js` then streams replies into it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from galerne.catalog import Capability
from galerne.errors import NotFoundError
from galerne.services.auth import Principal
from galerne.services.conversations import ConversationDetail, ConversationPage
from galerne.web.auth import CurrentPrincipal, CurrentUser
from galerne.web.markdown import render_markdown
from galerne.web.runtime import WebRuntime, WebRuntimeDep
from galerne.web.templating import render

router = APIRouter(prefix="/chat", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def new_chat(
    request: Request, user: CurrentUser, principal: CurrentPrincipal, chat: WebRuntimeDep, cursor: str | None = None
) -> Any:
    page, _ = await chat.conversations.page(user.id, None, cursor)
    return _render(request, principal, chat, page, None)


@router.get("/c/{conversation_id}", response_class=HTMLResponse)
async def conversation(
    request: Request,
    conversation_id: str,
    user: CurrentUser,
    principal: CurrentPrincipal,
    chat: WebRuntimeDep,
    cursor: str | None = None,
) -> Any:
    try:
        page, detail = await chat.conversations.page(user.id, conversation_id, cursor)
    except NotFoundError:
        return render(request, "chat_not_found.html", status_code=404)
    return _render(request, principal, chat, page, detail)


@router.get("/search", response_class=HTMLResponse)
async def search(
    request: Request, user: CurrentUser, principal: CurrentPrincipal, chat: WebRuntimeDep,
    q: str = Query("", max_length=200),
) -> Any:
    found = await chat.conversations.search(user.id, q)
    return _render(request, principal, chat, ConversationPage(found, None), None, query=q)


def _render(
    request: Request,
    principal: Principal,
    chat: WebRuntime,
    page: ConversationPage,
    detail: ConversationDetail | None,
    *,
    query: str = "",
) -> Any:
    models = [
        entry for entry in chat.registry.catalog.ordered()
        if Capability.CHAT in entry.capabilities and principal.may_use(entry.id)
    ]
    current = detail.model if detail is not None else (models[0].id if models else "")
    messages = [] if detail is None else [(message, render_markdown(message.content)) for message in detail.messages]
    return render(
        request,
        "chat.html",
        conversations=page,
        conversation=detail,
        messages=messages,
        models=models,
        current_model=current,
        query=query,
    )
