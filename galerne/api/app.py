"""`create_app(settings)`: the ASGI application, with its models loaded in the lifespan.

Example: ``uvicorn.run(create_app(Settings()), host="127.0.0.1", port=8000)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import galerne
from galerne.api.deps import Runtime
from galerne.api.errors import install_error_handlers
from galerne.api.limits import BodySizeLimit
from galerne.api.routes import chat, health, models
from galerne.catalog import Catalog, load_catalog
from galerne.config import Settings
from galerne.services.chat import ChatService
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry


def create_app(settings: Settings, catalog: Catalog | None = None) -> FastAPI:
    """Build the app; models load when the server starts and are freed when it stops."""
    catalog = catalog or load_catalog(settings.config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = Metrics()
        registry = ModelRegistry.load(catalog, settings, metrics)
        app.state.runtime = Runtime(registry=registry, chat=ChatService(registry, metrics), metrics=metrics)
        try:
            yield
        finally:
            registry.close()

    app = FastAPI(title="Galerne", version=galerne.__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    for module in (chat, models, health):
        app.include_router(module.router)
    return app
