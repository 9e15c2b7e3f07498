"""Admission and settlement of one request: budget left → rate limits reserved → … → tokens refunded and
usage recorded. (Whether the key's project may use the model was settled when the model was resolved.)

Tokens are reserved up front (prompt plus the most the reply may take), so concurrent requests can
never overshoot a tokens/minute limit together (LiteLLM's #18730 let 663 tokens through a 100 TPM
limit); the unused part is refunded when the request ends, however it ends.

Example::

    ticket = await admission.admit(principal, entry, reserved_tokens=900)
    ...
    admission.settle(ticket, prompt_tokens=120, completion_tokens=35, ttft=0.2, status=UsageStatus.OK)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from galerne.catalog import ModelEntry
from galerne.errors import BudgetExceededError, RateLimitExceededError
from galerne.services.auth import Principal
from galerne.services.limits import Lease, Limiter
from galerne.services.metering import UsageEvent, UsageMeter, UsageStatus, cost_micros, now_utc
from galerne.storage.database import Database
from galerne.storage.tables import MICROS_PER_UNIT
from galerne.storage.usage import monthly_totals


@dataclass(slots=True)
class Ticket:
    """An admitted request: who, which model, what it holds of the limits, and when it started."""

    principal: Principal
    entry: ModelEntry
    lease: Lease | None
    started: float = field(default_factory=time.monotonic)
    is_settled: bool = False

    @property
    def limit_headers(self) -> dict[str, str]:
        return self.lease.limit_headers if self.lease is not None else {}


class Admission:
    def __init__(
        self, limiter: Limiter, meter: UsageMeter, database: Database, *, budget_cache_seconds: float = 2.0
    ) -> None:
        self._limiter = limiter
        self._meter = meter
        self._database = database
        self._budget_cache_seconds = budget_cache_seconds
        self._spent: dict[str, tuple[float, date, int, int]] = {}

    async def precheck(self, principal: Principal) -> None:
        """Refuse (429/503) what is bound to be refused, before the request's expensive preparation:
        a spent budget, a rate limit with no room left at all, metering that cannot record."""
        self._meter.check_capacity()
        if principal.project_id is None:
            return
        await self._check_budget(principal, principal.project_id)
        await self._limiter.check(principal.project_id, principal.limits)

    async def admit(self, principal: Principal, entry: ModelEntry, reserved_tokens: int) -> Ticket:
        """Refuse (429) a project over its monthly budget or its rate limits, and (503) any request whose
        usage could not be recorded safely; otherwise hold its share."""
        self._meter.check_capacity()
        if principal.project_id is None:
            return Ticket(principal, entry, lease=None)
        await self._check_budget(principal, principal.project_id)
        lease = await self._limiter.acquire(principal.project_id, principal.limits, reserved_tokens)
        return Ticket(principal, entry, lease=lease)

    def settle(
        self,
        ticket: Ticket,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_seconds: float | None,
        status: UsageStatus,
        moderation: str | None = None,
    ) -> None:
        """Refund unused tokens and record usage; safe to call from `finally` of a cancelled request."""
        if ticket.is_settled:
            return
        ticket.is_settled = True
        if ticket.lease is not None:
            self._limiter.release(ticket.lease, prompt_tokens + completion_tokens)
        entry = ticket.entry
        self._meter.record(
            UsageEvent(
                project_id=ticket.principal.project_id,
                key_id=ticket.principal.usage_key,
                model=entry.id,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_micros=cost_micros(
                    prompt_tokens, completion_tokens, entry.price_input_per_million, entry.price_output_per_million
                ),
                ttft_seconds=ttft_seconds,
                duration_seconds=time.monotonic() - ticket.started,
                status=status,
                finished_at=now_utc(),
                moderation=moderation,
            )
        )

    def count_refusal(self, principal: Principal, error: RateLimitExceededError) -> None:
        """Count a request its project's limits or budget refused (429), for the console's usage page."""
        if principal.project_id is not None:
            self._meter.count_refusal(principal.project_id, principal.usage_key, error.reason)

    def release_unused(self, ticket: Ticket) -> None:
        """A request refused after admission (engine queue full): give back everything, record nothing."""
        if not ticket.is_settled and ticket.lease is not None:
            ticket.is_settled = True
            self._limiter.release(ticket.lease, 0)

    async def _check_budget(self, principal: Principal, project_id: str) -> None:
        if principal.monthly_token_budget is None and principal.monthly_budget_micros is None:
            return
        tokens, cost = await self._spent_this_month(project_id)
        if principal.monthly_token_budget is not None and tokens >= principal.monthly_token_budget:
            raise BudgetExceededError(
                f"project {principal.project_name!r} used its monthly budget of {principal.monthly_token_budget} "
                "tokens; it resets on the 1st (UTC), or the operator can raise it",
                retry_after=_seconds_to_next_month(),
                reason="monthly_token_budget",
            )
        if principal.monthly_budget_micros is not None and cost >= principal.monthly_budget_micros:
            raise BudgetExceededError(
                f"project {principal.project_name!r} spent its monthly budget of "
                f"{principal.monthly_budget_micros / MICROS_PER_UNIT:g}; it resets on the 1st (UTC), "
                "or the operator can raise it",
                retry_after=_seconds_to_next_month(),
                reason="monthly_budget",
            )

    async def _spent_this_month(self, project_id: str) -> tuple[int, int]:
        """From the daily rollups, cached briefly: budgets may be overshot by the last seconds of traffic."""
        first_day = datetime.now(UTC).date().replace(day=1)
        cached = self._spent.get(project_id)
        if cached is not None and cached[1] == first_day and time.monotonic() - cached[0] < self._budget_cache_seconds:
            return cached[2], cached[3]

        def read() -> tuple[int, int]:
            with self._database.session() as session:
                return monthly_totals(session, project_id, first_day)

        tokens, cost = await asyncio.to_thread(read)
        self._spent[project_id] = (time.monotonic(), first_day, tokens, cost)
        return tokens, cost


def _seconds_to_next_month() -> int:
    now = datetime.now(UTC)
    start = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return max(1, int((start - now).total_seconds()))
