"""Rate limits in Redis, shared by every replica: one Lua script (`limits.lua`) checks and takes all
buckets of a request atomically, with Redis's clock, so N replicas admit exactly what one would.

Concurrency places are leases in a sorted set scored by expiry, and they heal themselves: a lease lives
`lease_seconds` (30 s) and one heartbeat task per limiter renews every lease of this process's running
requests in one pipelined call every third of that. A replica that dies, or a release lost while Redis
was unreachable, therefore holds a place for at most `lease_seconds`, not for the length of the longest
request. Releases that fail are retried with backoff until the lease would have lapsed anyway.

When Redis cannot be reached, requests of limited projects are refused (503) rather than served without
limits; the client is told which part is down, the log says where it was looked for and why it failed.

Example::

    limiter = RedisLimiter("redis://127.0.0.1:6379/0")
    lease = await limiter.acquire("project-id", RateLimits(requests_per_minute=20), num_tokens=500)
    limiter.release(lease, used_tokens=120)
    await limiter.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from importlib.resources import files
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from galerne.errors import LimitStoreUnavailableError
from galerne.services.limits import Lease, RateLimits, Shortage, check_fits, limit_headers, refusal

logger = logging.getLogger(__name__)

_SHORTAGES: dict[int, Shortage] = {1: "requests", 2: "tokens", 3: "concurrency"}
_UNLIMITED = -1
_FIRST_RETRY_SECONDS = 0.1
_MAX_RETRY_SECONDS = 1.0  # a restored Redis sees the release within a second
_WARN_EVERY_SECONDS = 10.0  # one warning per outage burst, not one per request
_UNREACHABLE = "the rate-limit store is unreachable; retry shortly (the operator finds the cause in the server log)"


class RedisLimiter:
    """Buckets in Redis under `{prefix}:{<scope>}:*`; every acquire and release is one EVALSHA of `limits.lua`."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = 30.0,
        prefix: str = "galerne:limits",
        timeout_seconds: float = 5.0,
    ) -> None:
        self._client: redis.Redis = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_seconds, socket_timeout=timeout_seconds
        )
        self._script = self._client.register_script(files("galerne.services").joinpath("limits.lua").read_text())
        self._lease_seconds = max(0.001, lease_seconds)
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._prefix = prefix
        self._timeout_seconds = timeout_seconds
        self._pending: set[asyncio.Task[Any]] = set()
        self._live: dict[str, str] = {}  # lease id -> scope, for the places of requests running here
        self._heartbeat: asyncio.Task[None] | None = None
        self._last_warning = float("-inf")

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
            raise self._unreachable("admitting a request", exc) from exc
        is_admitted, shortage, retry_after_ms, num_requests_left, num_tokens_left = (int(value) for value in reply)
        if not is_admitted:
            shortage_name = _SHORTAGES[shortage]
            raise refusal(limits, shortage_name, retry_after_ms / 1000, num_requests_left, num_tokens_left)
        lease.limit_headers = limit_headers(limits, num_requests_left, num_tokens_left)
        if lease.has_concurrency_place:
            self._live[lease.lease_id] = scope
            self._start_heartbeat()
        return lease

    async def check(self, scope: str, limits: RateLimits) -> None:
        if limits.is_unlimited:
            return
        args: list[str | int] = [
            "check",
            _or_unlimited(limits.requests_per_minute),
            _or_unlimited(limits.tokens_per_minute),
            _or_unlimited(limits.max_concurrent_requests),
        ]
        try:
            reply = await self._script(keys=self._keys(scope), args=args)
        except (RedisError, OSError) as exc:
            raise self._unreachable("checking a project's limits", exc) from exc
        is_admitted, shortage, retry_after_ms, num_requests_left, num_tokens_left = (int(value) for value in reply)
        if not is_admitted:
            raise refusal(limits, _SHORTAGES[shortage], retry_after_ms / 1000, num_requests_left, num_tokens_left)

    def release(self, lease: Lease, used_tokens: int) -> None:
        """Scheduled, not awaited: it runs from `finally` blocks of requests that may be cancelled."""
        if lease.is_released:
            return
        lease.is_released = True
        self._live.pop(lease.lease_id, None)  # no longer renewed: if the release is lost, the place lapses
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
        self._track(loop.create_task(self._release(self._keys(lease.scope), args, lease.lease_id)))

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise self._unreachable("checking the rate-limit store", exc) from exc

    async def renew(self) -> int:
        """Push back the expiry of every lease of this process's running requests: one pipelined call.

        Returns how many were renewed (a lease released or lapsed meanwhile is not brought back).
        Failures are logged, not raised: the heartbeat tries again, and a lease it cannot reach lapses.
        """
        by_scope: dict[str, list[str]] = {}
        for lease_id, scope in self._live.items():
            by_scope.setdefault(scope, []).append(lease_id)
        if not by_scope:
            return 0
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for scope, lease_ids in by_scope.items():
                    await self._script(keys=self._keys(scope), args=["renew", self._lease_ms, *lease_ids], client=pipe)
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._warn("renewing rate-limit leases", exc)
            return 0
        return sum(int(reply) for reply in replies)

    async def settle(self) -> None:
        """Wait up to `timeout_seconds` for the scheduled releases and undos to reach Redis.

        `release` returns before Redis has the place back; whoever must see it back (a shutdown, a test of
        the counts) waits here rather than for a guessed delay.
        """
        deadline = time.monotonic() + self._timeout_seconds
        while self._pending and time.monotonic() < deadline:
            await asyncio.wait(set(self._pending), timeout=max(0.0, deadline - time.monotonic()))

    async def aclose(self) -> None:
        """Stop renewing, give pending releases up to `timeout_seconds`, then close the connections.

        A release still failing then is abandoned: its place lapses within `lease_seconds` on its own.
        """
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self.settle()
        if self._pending:
            logger.warning(
                "closing with %d rate-limit releases not done; their places lapse within %g s",
                len(self._pending), self._lease_seconds,
            )
            for task in list(self._pending):
                task.cancel()
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._client.aclose()

    async def _release(self, keys: list[str], args: list[str | int], lease_id: str) -> None:
        """Retried with backoff while Redis is unreachable, until the lease would have lapsed anyway."""
        give_up_at = time.monotonic() + self._lease_seconds
        delay = _FIRST_RETRY_SECONDS
        while True:
            try:
                await self._script(keys=keys, args=args)
                return
            except (RedisError, OSError) as exc:
                if time.monotonic() + delay >= give_up_at:
                    logger.warning(
                        "releasing rate-limit lease %s failed for %g s; its place has lapsed, its unused tokens "
                        "were not refunded: %s", lease_id, self._lease_seconds, exc,
                    )
                    return
                self._warn("releasing a rate-limit lease (retrying)", exc)
            await asyncio.sleep(delay)
            delay = min(2 * delay, _MAX_RETRY_SECONDS)

    async def _renew_while_live(self) -> None:
        """The heartbeat: runs while this process holds places, and stops when it holds none."""
        while self._live:
            await asyncio.sleep(self._lease_seconds / 3)
            await self.renew()

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(
                self._renew_while_live(), name="galerne-limits-heartbeat"
            )

    def _unreachable(self, action: str, exc: BaseException) -> LimitStoreUnavailableError:
        """The client's error names the part, never where it is: that goes to the log."""
        self._warn(action, exc)
        return LimitStoreUnavailableError(_UNREACHABLE)

    def _warn(self, action: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_SECONDS:
            self._last_warning = now
            logger.warning("%s failed: the rate-limit store %s is unreachable: %s", action, self._location(), exc)

    def _location(self) -> str:
        """Where Redis is looked for, without credentials."""
        kwargs = self._client.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix://{kwargs['path']}"
        return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"

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
