"""Rate limits in Redis, shared by every replica: one Lua script (`limits.lua`) checks and takes all
buckets of a request atomically, with Redis's clock, so N replicas admit exactly what one would.

Concurrency places are leases in a sorted set scored by expiry, so a replica killed mid-request
cannot hold its places for ever: they lapse after `lease_seconds`.

Example::

    limiter = RedisLimiter("redis://127.0.0.1:6379/0")
    lease = await limiter.acquire("project-id", RateLimits(requests_per_minute=20), num_tokens=500)
    limiter.release(lease, used_tokens=120)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from importlib.resources import files
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from galerne.errors import GalerneError
from galerne.services.limits import Lease, RateLimits, check_fits, limit_headers, refusal

logger = logging.getLogger(__name__)

_REASONS = {1: "requests", 2: "tokens", 3: "concurrency"}
_UNLIMITED = -1


class LimitStoreUnavailableError(GalerneError):
    """Redis cannot be reached: refuse rather than serve without limits."""

    status = 503
    type = "server_error"
    code = "rate_limit_store_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class RedisLimiter:
    def __init__(self, url: str, *, lease_seconds: float = 900.0, prefix: str = "galerne:limits") -> None:
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._script = self._client.register_script(files("galerne.services").joinpath("limits.lua").read_text())
        self._lease_ms = int(lease_seconds * 1000)
        self._prefix = prefix
        self._pending: set[asyncio.Task[Any]] = set()

    async def acquire(self, scope: str, limits: RateLimits, num_tokens: int) -> Lease:
        check_fits(limits, num_tokens)
        lease_id = uuid.uuid4().hex
        args: list[str | int] = [
            "acquire",
            _or_unlimited(limits.requests_per_minute),
            _or_unlimited(limits.tokens_per_minute),
            _or_unlimited(limits.max_concurrent_requests),
            num_tokens,
            lease_id,
            self._lease_ms,
        ]
        try:
            admitted, reason, retry_ms, requests, tokens = await self._script(keys=self._keys(scope), args=args)
        except RedisError as exc:
            message = f"the rate-limit store (Redis) is unreachable: {exc}; retry shortly"
            raise LimitStoreUnavailableError(message) from exc
        if not admitted:
            raise refusal(limits, _REASONS[int(reason)], int(retry_ms) / 1000, int(requests), int(tokens))
        return Lease(
            scope=scope,
            lease_id=lease_id,
            reserved_tokens=num_tokens,
            limit_headers=limit_headers(limits, int(requests), int(tokens)),
            has_concurrency_place=limits.max_concurrent_requests is not None,
            tokens_per_minute=limits.tokens_per_minute,
        )

    def release(self, lease: Lease, used_tokens: int) -> None:
        """Scheduled, not awaited: it runs from `finally` blocks of requests that may be cancelled."""
        if lease.is_released:
            return
        lease.is_released = True
        if not lease.has_concurrency_place and lease.tokens_per_minute is None:
            return
        refund = lease.reserved_tokens - used_tokens
        args: list[str | int] = ["release", _or_unlimited(lease.tokens_per_minute), refund, lease.lease_id]
        task = asyncio.get_running_loop().create_task(self._release(self._keys(lease.scope), args))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._client.aclose()

    async def _release(self, keys: list[str], args: list[str | int]) -> None:
        try:
            await self._script(keys=keys, args=args)
        except RedisError as exc:  # the lease lapses on its own; the refund is lost, which only errs strict
            logger.warning("releasing a rate-limit lease failed: %s", exc)

    def _keys(self, scope: str) -> list[str]:
        # One hash tag per scope keeps a project's keys on one Redis Cluster slot, as the script needs.
        base = f"{self._prefix}:{{{scope}}}"
        return [f"{base}:requests", f"{base}:tokens", f"{base}:leases"]


def _or_unlimited(value: int | None) -> int:
    return _UNLIMITED if value is None else value
