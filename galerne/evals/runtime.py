"""The services an evaluation runs through, built in-process as `create_app` builds them for the API.

Only the model under evaluation is loaded. Usage goes through the same admission (limits, budgets) and
the same usage meter (journal, then database) as API traffic, under the project named by `--project`
(created without limits on first use), so evaluations show in `galerne usage` beside everything else.

Example::

    async with eval_runtime(settings, catalog, "smollm2", project="evals") as runtime:
        summary = await EvalRunner(runtime.database, runtime.client, runtime.entry).run(config)
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from galerne.catalog import Capability, Catalog, ModelEntry
from galerne.config import Settings
from galerne.errors import PermissionDeniedError
from galerne.evals.client import ServiceClient
from galerne.services.admission import Admission
from galerne.services.auth import Principal, project_principal
from galerne.services.chat import ChatService
from galerne.services.completions import CompletionService
from galerne.services.limits import build_limiter
from galerne.services.metering import MeterOptions, UsageMeter
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry
from galerne.storage import tenancy
from galerne.storage.database import Database
from galerne.storage.tables import Project


@dataclass(frozen=True)
class EvalRuntime:
    database: Database
    entry: ModelEntry
    client: ServiceClient


@asynccontextmanager
async def eval_runtime(settings: Settings, catalog: Catalog, model: str, *, project: str) -> AsyncIterator[EvalRuntime]:
    """Open the database, load `model`, and yield a client acting for `project`; everything is closed (usage
    flushed to the database) on the way out."""
    async with AsyncExitStack() as stack:
        database = Database.open(settings.resolved_database_url())
        stack.callback(database.close)
        principal = project_caller(database, project)
        entry = catalog.resolve(model, is_visible=principal.may_use)
        limiter = build_limiter(settings.redis_url)
        stack.push_async_callback(limiter.aclose)
        meter = UsageMeter(
            database, settings.ensure_home() / "usage-journal",
            MeterOptions(is_journalled=settings.usage_journal, flush_seconds=settings.usage_flush_seconds),
        )
        stack.callback(meter.close)
        metrics = Metrics()
        registry = ModelRegistry.load(Catalog(models=(entry,)), settings, metrics)
        stack.callback(registry.close)
        admission = Admission(limiter, meter, database)
        chat = ChatService(registry, metrics, admission)
        # Log-likelihoods need the model's logits: embedded engines have them, remote ones do not.
        capabilities = registry.engine_for(entry).capabilities
        scorer = CompletionService(chat) if capabilities.supports_logprobs else None
        can_constrain = capabilities.supports_json and Capability.JSON in entry.capabilities
        client = ServiceClient(chat, principal, entry.id, scorer=scorer, can_constrain=can_constrain)
        yield EvalRuntime(database=database, entry=entry, client=client)


def project_caller(database: Database, name: str) -> Principal:
    """The principal of project `name` (created unlimited when missing), as its API keys would be."""
    with database.session() as session:
        project = tenancy.find_project(session, name)
        if project is None:
            project = tenancy.add_project(
                session, Project(id=secrets.token_hex(8), name=name, created_at=datetime.now(UTC))
            )
            session.flush()
        if project.is_disabled:
            raise PermissionDeniedError(f"project {name!r} is disabled; enable it or pass another --project")
        return project_principal(project)
