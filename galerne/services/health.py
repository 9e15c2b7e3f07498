"""Whether this replica can serve: its database, its rate-limit store and each model's engine.

A load balancer polls `/health` every few seconds, so each probe is bounded (`timeout_seconds`) and a
database probe still running from an earlier call is shared, not repeated: a hung database costs one
thread, not one per poll. The report says which part is down; why (host, port, driver error) goes to the
log, where the failing part logs it.

Example::

    health = HealthCheck(registry, database, limiter)
    report = await health.check()
    report.down  # e.g. ["limit_store"]
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from galerne.engines.base import EngineStats
from galerne.errors import LimitStoreUnavailableError
from galerne.services.limits import Limiter
from galerne.services.models import ModelRegistry
from galerne.storage.database import Database

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HealthReport:
    is_database_up: bool
    is_limit_store_up: bool
    engines: dict[str, EngineStats]  # by model id

    @property
    def are_engines_up(self) -> bool:
        return all(stats.is_healthy for stats in self.engines.values())

    @property
    def down(self) -> list[str]:
        """The parts that are down, by the names `/health` uses: database, limit_store, engines."""
        parts = {"database": self.is_database_up, "limit_store": self.is_limit_store_up, "engines": self.are_engines_up}
        return [name for name, is_up in parts.items() if not is_up]

    @property
    def is_healthy(self) -> bool:
        return not self.down


class HealthCheck:
    def __init__(
        self, registry: ModelRegistry, database: Database, limiter: Limiter, *, timeout_seconds: float = 2.0
    ) -> None:
        self._registry = registry
        self._database = database
        self._limiter = limiter
        self._timeout_seconds = timeout_seconds
        self._database_probe: asyncio.Future[bool] | None = None

    async def check(self) -> HealthReport:
        is_database_up, is_limit_store_up = await asyncio.gather(self._is_database_up(), self._is_limit_store_up())
        engines = {entry.id: self._registry.engine_for(entry).stats() for entry in self._registry.catalog.models}
        return HealthReport(is_database_up=is_database_up, is_limit_store_up=is_limit_store_up, engines=engines)

    async def _is_database_up(self) -> bool:
        if self._database_probe is None or self._database_probe.done():
            self._database_probe = asyncio.ensure_future(asyncio.to_thread(self._database.is_reachable))
        try:
            return await asyncio.wait_for(asyncio.shield(self._database_probe), self._timeout_seconds)
        except TimeoutError:
            logger.warning(
                "the database %s did not answer a health check within %g s",
                self._database.location(), self._timeout_seconds,
            )
            return False

    async def _is_limit_store_up(self) -> bool:
        try:
            await asyncio.wait_for(self._limiter.ping(), self._timeout_seconds)
        except LimitStoreUnavailableError:
            return False  # the limiter logged where and why
        except TimeoutError:
            logger.warning("the rate-limit store did not answer a health check within %g s", self._timeout_seconds)
            return False
        return True
