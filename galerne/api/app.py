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
from galerne.api.routes import admin, chat, completions, embeddings, files, health, models, moderations
from galerne.catalog import Capability, Catalog, load_catalog
from galerne.config import Settings
from galerne.errors import LimitStoreUnavailableError
from galerne.services.accounts import AccountService
from galerne.services.admission import Admission
from galerne.services.attachments import AttachmentService
from galerne.services.auth import Authenticator
from galerne.services.chat import ChatService
from galerne.services.completions import CompletionService
from galerne.services.console import ConsoleService
from galerne.services.conversations import ConversationService
from galerne.services.documents import DocumentLimits, DocumentService
from galerne.services.embeddings import EmbeddingService
from galerne.services.grounding import DocumentGrounding
from galerne.services.health import HealthCheck
from galerne.services.limits import Limiter, build_limiter
from galerne.services.login_limits import LoginThrottle
from galerne.services.metering import MeterOptions, UsageMeter
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry
from galerne.services.moderation.audit import ModerationAudit
from galerne.services.moderation.classifier import ModerationClassifier
from galerne.services.moderation.guard import PolicyGuard
from galerne.services.moderation.moderations import ModerationService
from galerne.services.replies import ReplyService
from galerne.services.sessions import SessionPolicy, SessionService
from galerne.services.usage import UsageReports
from galerne.services.users import UserPolicy, UserService
from galerne.storage.database import Database
from galerne.web import mount_web
from galerne.web.runtime import WebRuntime

logger = logging.getLogger(__name__)


# Bodies up to `max_file_bytes`; each is a pattern a path must match in full (see BodySizeLimit).
UPLOAD_PATHS = frozenset({"/v1/files", "/chat/api/files", "/chat/api/conversations/[0-9a-f]{32}/files"})


def create_app(settings: Settings, catalog: Catalog | None = None) -> FastAPI:
    """Build the app; models load when the server starts and are freed when it stops.

    Shutdown runs in reverse order of start-up: engines stop first (their requests settle), then the
    usage writer flushes every record, then the limiter and the database close.
    """
    settings.check_no_auth_is_local()  # here too: the app may be served by other means than `galerne serve`
    catalog = catalog or load_catalog(settings.config, settings.builtin_models)

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
            admission = Admission(limiter, meter, database)
            chat_service = ChatService(registry, metrics, admission)
            classifier = ModerationClassifier(chat_service, catalog)
            audit = ModerationAudit(database)
            chat_service.guard = PolicyGuard(classifier, catalog, audit)
            accounts = AccountService(database, catalog)
            embeddings = EmbeddingService(registry, metrics, admission)
            documents = _documents(catalog, database, embeddings, settings)
            if documents is not None:
                chat_service.grounding = DocumentGrounding(documents)
                await documents.forget_stale_temporary()
            app.state.runtime = Runtime(
                registry=registry,
                chat=chat_service,
                completions=CompletionService(chat_service),
                metrics=metrics,
                accounts=accounts,
                usage=UsageReports(database),
                health=HealthCheck(registry, database, limiter),
                authenticator=authenticator,
                moderations=ModerationService(chat_service, classifier),
                moderation_audit=audit,
                embeddings=embeddings,
                documents=documents,
            )
            if settings.web:
                console = ConsoleService(database, accounts, registry, authenticator, moderation=audit)
                app.state.web = _web_runtime(settings, database, limiter, chat_service, registry, console, documents)
            yield

    hide_credentials_in_access_log()
    app = FastAPI(title="Galerne", version=galerne.__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        upload_paths=UPLOAD_PATHS,
        max_upload_bytes=settings.max_file_bytes,
    )
    for module in (chat, completions, moderations, models, health, admin, files, embeddings):
        app.include_router(module.router)
    if settings.web:
        mount_web(app)
    return app


def _documents(
    catalog: Catalog, database: Database, embeddings: EmbeddingService, settings: Settings
) -> DocumentService | None:
    """Documents need an embedding model; without one, /v1/files and documents in chat calls answer 400."""
    if not any(Capability.EMBEDDINGS in entry.capabilities for entry in catalog.models):
        return None
    return DocumentService(database, embeddings, DocumentLimits(max_bytes=settings.max_file_bytes))


def _web_runtime(
    settings: Settings, database: Database, limiter: Limiter, chat: ChatService, registry: ModelRegistry,
    console: ConsoleService, documents: DocumentService | None,
) -> WebRuntime:
    """The services behind Le Chat and the console, sharing the API's database, limiter, chat service, models,
    key cache and documents (None without an embedding model: attaching documents is then refused)."""
    users = UserService(
        database,
        UserPolicy(signup=settings.signup, chat_projects=settings.chat_projects, chat_project=settings.chat_project),
    )
    sessions = SessionService(
        database, SessionPolicy(idle_seconds=settings.session_idle_seconds, max_seconds=settings.session_max_seconds)
    )
    return WebRuntime(
        settings=settings, users=users, sessions=sessions,
        login_throttle=LoginThrottle(limiter, settings.login_attempts_per_minute), chat=chat, registry=registry,
        conversations=ConversationService(database, registry.catalog),
        replies=ReplyService(database, chat, registry.catalog, max_tokens=settings.chat_max_tokens),
        console=console, attachments=AttachmentService(database, documents),
    )


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
