"""Typed dependencies: routes ask for a service, never reach into `app.state` themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from galerne.services.chat import ChatService
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry


@dataclass
class Runtime:
    """Everything built at start-up and shared by requests."""

    registry: ModelRegistry
    chat: ChatService
    metrics: Metrics


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
