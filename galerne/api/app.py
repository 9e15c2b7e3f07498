"""`create_app(settings)`: the ASGI application, with its models, database and limits set up in the lifespan.

Example: ``uvicorn.run(create_app(Settings()), host="127.0.0.1", port=8000)``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

import galerne
from galerne.api.access_log import hide_credentials_in_access_log
from galerne.api.deps import Runtime
from galerne.api.errors import install_error_handlers
from galerne.api.limits import BodySizeLimit
from galerne.api.routes import admin, chat, health, models
from galerne.catalog import Catalog, load_catalog
from galerne.config import Settings
from galerne.errors import LimitStoreUnavailableError
from galerne.services.accounts import AccountService
from galerne.services.admission import Admission
from galerne.services.auth import Authenticator
from galerne.services.chat import ChatService
from galerne.services.health import HealthCheck
from galerne.services.limits import Limiter, build_limiter
from galerne.services.metering import MeterOptions, UsageMeter
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry
from galerne.services.usage import UsageReports
from galerne.storage.database import Database

logger = logging.getLogger(__name__)


def create_app(settings: Settings, catalog: Catalog | None = None) -> FastAPI:
    """Build the app; models load when the server starts and are freed when it stops.

    Shutdown runs in reverse order of start-up: engines stop first (their requests settle), then the
    usage writer flushes every record, then the limiter and the database close.
    """
    settings.check_no_auth_is_local()  # here too: the app may be served by other means than `galerne serve`
    catalog = catalog or load_catalog(settings.config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            database = Database.open(settings.resolved_database_url())
            stack.callback(database.close)
            limiter = build_limiter(settings.redis_url)
            stack.push_async_callback(limiter.aclose)
            await _warn_if_unreachable(limiter)
            meter = UsageMeter(
                database,
                settings.ensure_home() / "usage-journal",
                MeterOptions(
                    is_journalled=settings.usage_journal,
                    flush_seconds=settings.usage_flush_seconds,
                    max_pending=settings.usage_max_pending,
                    max_journal_bytes=settings.usage_journal_max_bytes,
                ),
            )
            stack.callback(meter.close)
            metrics = Metrics()
            metrics.watch_meter(meter.backlog_bytes, lambda: meter.num_in_memory)
            registry = ModelRegistry.load(catalog, settings, metrics)
            stack.callback(registry.close)
            authenticator = None if settings.no_auth else Authenticator(
                database, cache_seconds=settings.key_cache_seconds
            )
            app.state.runtime = Runtime(
                registry=registry,
                chat=ChatService(registry, metrics, Admission(limiter, meter, database)),
                metrics=metrics,
                accounts=AccountService(database, catalog),
                usage=UsageReports(database),
                health=HealthCheck(registry, database, limiter),
                authenticator=authenticator,
            )
            yield

    hide_credentials_in_access_log()
    app = FastAPI(title="Galerne", version=galerne.__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    for module in (chat, models, health, admin):
        app.include_router(module.router)
    return app


async def _warn_if_unreachable(limiter: Limiter) -> None:
    """Start anyway (Redis may come up after us) but say so: limited projects get 503 until it answers."""
    try:
        await limiter.ping()
    except LimitStoreUnavailableError:
        logger.warning(
            "starting without the rate-limit store: requests of projects with limits are refused (503) until it "
            "answers; /health reports limit_store down"
        )


def app_from_environment() -> FastAPI:
    """The app of one worker process of `galerne serve --workers N`, built from `GALERNE_*` variables."""
    return create_app(Settings())
