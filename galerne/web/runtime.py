"""What the web app's routes use, built once at start-up (in `create_app`'s lifespan) and kept on
`app.state.web`: services only, never engines or storage directly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from galerne.config import Settings
from galerne.services.attachments import AttachmentService
from galerne.services.chat import ChatService
from galerne.services.console import ConsoleService
from galerne.services.conversations import ConversationService
from galerne.services.login_limits import LoginThrottle
from galerne.services.models import ModelRegistry
from galerne.services.replies import ReplyService
from galerne.services.sessions import SessionService
from galerne.services.users import UserService


@dataclass
class WebRuntime:
    settings: Settings
    users: UserService
    sessions: SessionService
    login_throttle: LoginThrottle
    chat: ChatService
    registry: ModelRegistry
    conversations: ConversationService
    replies: ReplyService
    console: ConsoleService
    attachments: AttachmentService  # a conversation's documents (refused with 400 without an embedding model)


async def get_web_runtime(request: Request) -> WebRuntime:
    runtime: WebRuntime = request.app.state.web
    return runtime


WebRuntimeDep = Annotated[WebRuntime, Depends(get_web_runtime)]
