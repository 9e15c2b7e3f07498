"""Rate limits in Redis, shared by every replica: one Lua script (`limits.lua`) checks and takes all
buckets of a request atomically, with Redis's clock, so N replicas admit exactly what one would.

Concurrency places are leases in a sorted set scored by expiry, so a replica killed mid-request
cannot hold its places for ever: they lapse after `lease_seconds`. When Redis cannot be reached,
requests are refused (503) rather than served without limits.

Example::

    limiter = RedisLimiter("redis://127.0.0.1:6379/0")
    lease = await limiter.acquire("project-id", RateLimits(requests_per_minute=20), num_tokens=500)
    limiter.release(lease, used_tokens=120)
    await limiter.aclose()
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
from galerne.services.limits import Lease, RateLimits, Shortage, check_fits, limit_headers, refusal

logger = logging.getLogger(__name__)

_SHORTAGES: dict[int, Shortage] = {1: "requests", 2: "tokens", 3: "concurrency"}
_UNLIMITED = -1


class LimitStoreUnavailableError(GalerneError):
    """Redis cannot be reached: refuse rather than serve without limits."""

    status = 503
    type = "server_error"
    code = "rate_limit_store_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class RedisLimiter:
    """Buckets in Redis under `{prefix}:{<scope>}:*`; every acquire and release is one EVALSHA of `limits.lua`."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = 900.0,
        prefix: str = "galerne:limits",
        timeout_seconds: float = 5.0,
    ) -> None:
        self._client: redis.Redis = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_seconds, socket_timeout=timeout_seconds
        )
        self._script = self._client.register_script(files("galerne.services").joinpath("limits.lua").read_text())
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._prefix = prefix
        self._pending: set[asyncio.Task[Any]] = set()

    async def acquire(self, scope: str, limits: RateLimits, num_tokens: int) -> Lease:
        check_fits(limits, num_tokens)
        lease = Lease(
            scope=scope,
            lease_id=uuid.uuid4().hex,
            reserved_tokens=num_tokens,
            has_concurrency_place=limits.max_concurrent_requests is not None,
            tokens_per_minute=limits.tokens_per_minute,
        )
        if limits.is_unlimited:
            return lease  # nothing to count: no round trip
        args: list[str | int] = [
            "acquire",
            _or_unlimited(limits.requests_per_minute),
            _or_unlimited(limits.tokens_per_minute),
            _or_unlimited(limits.max_concurrent_requests),
            num_tokens,
            lease.lease_id,
            self._lease_ms,
        ]
        call = self._track(asyncio.ensure_future(self._script(keys=self._keys(scope), args=args)))
        try:
            reply = await asyncio.shield(call)
        except asyncio.CancelledError:
            # The script may run anyway and admit; give back what it took instead of holding a place for
            # lease_seconds on behalf of a client that has gone.
            call.add_done_callback(lambda done: self._undo(done, lease))
            raise
        except (RedisError, OSError) as exc:
            message = f"the rate-limit store (Redis) is unreachable: {exc}; retry shortly"
            raise LimitStoreUnavailableError(message) from exc
        is_admitted, shortage, retry_after_ms, num_requests_left, num_tokens_left = (int(value) for value in reply)
        if not is_admitted:
            shortage_name = _SHORTAGES[shortage]
            raise refusal(limits, shortage_name, retry_after_ms / 1000, num_requests_left, num_tokens_left)
        lease.limit_headers = limit_headers(limits, num_requests_left, num_tokens_left)
        return lease

    def release(self, lease: Lease, used_tokens: int) -> None:
        """Scheduled, not awaited: it runs from `finally` blocks of requests that may be cancelled."""
        if lease.is_released:
            return
        lease.is_released = True
        refund = lease.reserved_tokens - used_tokens
        is_refunding = lease.tokens_per_minute is not None and refund != 0
        if not lease.has_concurrency_place and not is_refunding:
            return
        args: list[str | int] = ["release", _or_unlimited(lease.tokens_per_minute), refund, lease.lease_id]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            logger.warning("rate-limit lease %s released outside an event loop; it lapses on its own", lease.lease_id)
            return
        self._track(loop.create_task(self._release(self._keys(lease.scope), args)))

    async def aclose(self) -> None:
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._client.aclose()

    async def _release(self, keys: list[str], args: list[str | int]) -> None:
        try:
            await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:  # the place lapses on its own; a lost refund only errs strict
            logger.warning("releasing a rate-limit lease failed: %s", exc)

    def _undo(self, call: asyncio.Future[Any], lease: Lease) -> None:
        """After a cancelled acquire: release the lease if the script admitted it after all."""
        if call.cancelled() or call.exception() is not None:
            return
        if int(call.result()[0]) == 1:
            self.release(lease, used_tokens=0)

    def _track(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Keep a reference until done: the loop holds tasks only weakly, and `aclose` waits for these."""
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    def _keys(self, scope: str) -> list[str]:
        # The {scope} hash tag keeps a project's keys on one Redis Cluster slot, as one script call needs.
        base = f"{self._prefix}:{{{scope}}}"
        return [f"{base}:requests", f"{base}:tokens", f"{base}:leases"]


def _or_unlimited(value: int | None) -> int:
    return _UNLIMITED if value is None else value
