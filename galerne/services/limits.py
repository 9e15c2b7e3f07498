"""Per-project rate limits: token buckets for requests and tokens per minute, and a concurrency count.

A bucket holds up to the per-minute limit and refills continuously at limit/60 per second, so a quiet
project may burst up to its limit. `acquire` is all or nothing: one request, the reserved tokens and a
concurrency place are taken together or not at all. `release` gives the place back and refunds the
tokens the request did not use. Capacity and rate come from the `RateLimits` of each call, so an
operator's change to a project applies at its next request.

`InProcessLimiter` keeps the buckets in this process (one replica); `RedisLimiter`
(`galerne.services.redis_limits`) keeps them in Redis so several replicas share them.

Example::

    limiter = build_limiter(settings.redis_url)
    lease = await limiter.acquire(project_id, RateLimits(requests_per_minute=20), num_tokens=900)
    try:
        ...
    finally:
        limiter.release(lease, used_tokens=312)
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from galerne.errors import RateLimitExceededError

SECONDS_PER_MINUTE = 60.0

Shortage = Literal["requests", "tokens", "concurrency"]


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A project's limits; None means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_requests: int | None = None

    @property
    def is_unlimited(self) -> bool:
        limits = (self.requests_per_minute, self.tokens_per_minute, self.max_concurrent_requests)
        return all(limit is None for limit in limits)


@dataclass(slots=True)
class Lease:
    """What one admitted request holds until it is released.

    The fields after `limit_headers` are the limiter's own book-keeping: `release` needs to know what
    the lease holds under the limits it was admitted with, whatever the project's limits are by then.
    """

    scope: str
    lease_id: str
    reserved_tokens: int
    limit_headers: dict[str, str] = field(default_factory=dict)
    has_concurrency_place: bool = False
    tokens_per_minute: int | None = None
    is_released: bool = False


class Limiter(Protocol):
    async def acquire(self, scope: str, limits: RateLimits, num_tokens: int) -> Lease:
        """Take one request, `num_tokens` tokens and one concurrency place of `scope`, all or nothing.

        Raises `RateLimitExceededError` when any of them is short (nothing is taken), with `retry_after`
        the whole seconds until the short bucket could admit the request (1 s for a concurrency place: one
        frees whenever a request of the project ends); with code `request_exceeds_token_limit` and no
        `retry_after` when `num_tokens` exceeds the tokens/minute limit itself, since no wait can help.
        """
        ...

    async def check(self, scope: str, limits: RateLimits) -> None:
        """Raise the refusal `acquire` of one token would raise now, taking nothing.

        A cheap early answer: a project already over its limits is refused before its prompt is
        tokenized or its grammar compiled; `acquire` still decides, atomically, once the size is known.
        """
        ...

    def release(self, lease: Lease, used_tokens: int) -> None:
        """Give back the concurrency place and refund `reserved_tokens - used_tokens` (negative: take the excess).

        Never blocks and never raises: it runs in `finally` blocks of cancelled requests. Idempotent.
        """
        ...

    async def ping(self) -> None:
        """Raise `LimitStoreUnavailableError` when the store cannot be reached now (its cause is logged)."""
        ...

    async def aclose(self) -> None:
        """Wait (briefly) for pending releases and close connections."""
        ...


def build_limiter(redis_url: str | None) -> Limiter:
    """Redis-backed when a URL is given (shared by replicas), in-process otherwise."""
    if redis_url:
        from galerne.services.redis_limits import RedisLimiter

        return RedisLimiter(redis_url)
    return InProcessLimiter()


def limit_headers(limits: RateLimits, remaining_requests: float, remaining_tokens: float) -> dict[str, str]:
    """la Plateforme's `x-ratelimit-*` headers, for the limits that are set; remaining is floored, never negative."""
    headers: dict[str, str] = {}
    if limits.requests_per_minute is not None:
        headers["x-ratelimit-limit-req-minute"] = str(limits.requests_per_minute)
        headers["x-ratelimit-remaining-req-minute"] = str(max(0, math.floor(remaining_requests)))
    if limits.tokens_per_minute is not None:
        headers["x-ratelimit-limit-tokens-minute"] = str(limits.tokens_per_minute)
        headers["x-ratelimit-remaining-tokens-minute"] = str(max(0, math.floor(remaining_tokens)))
    return headers


def check_fits(limits: RateLimits, num_tokens: int) -> None:
    """A request larger than the whole tokens/minute limit could never pass: say so instead of 'retry'."""
    if limits.tokens_per_minute is not None and num_tokens > limits.tokens_per_minute:
        raise RateLimitExceededError(
            f"this request needs {num_tokens} tokens (prompt + max_tokens) but the project allows "
            f"{limits.tokens_per_minute} tokens per minute; lower max_tokens",
            code="request_exceeds_token_limit",
            retry_after=None,
            limit_headers=limit_headers(limits, 0, 0),
        )


def seconds_to_refill(deficit: float, per_minute: int) -> float:
    """Seconds for a bucket refilling at `per_minute`/60 per second to gain `deficit`; a minute if it never refills."""
    if per_minute <= 0:
        return SECONDS_PER_MINUTE
    return deficit * SECONDS_PER_MINUTE / per_minute


_REASONS: dict[Shortage, str] = {
    "requests": "requests_per_minute", "tokens": "tokens_per_minute", "concurrency": "max_concurrent_requests"
}


def refusal(
    limits: RateLimits, shortage: Shortage, retry_after: float, remaining_requests: float, remaining_tokens: float
) -> RateLimitExceededError:
    """The 429 for a refused acquire: which limit, its value, and the whole seconds to wait (at least 1).

    A bucket's wait is exact (it refills at a known rate). A concurrency place has no known time: it frees
    when any request of the project ends, so 1 s is the earliest a retry could pass, not a promise; a place
    whose release was lost lapses within the limiter's lease time (30 s with Redis).
    """
    wait = max(1, math.ceil(retry_after))
    if shortage == "requests":
        what = f"{limits.requests_per_minute} requests per minute; retry in {wait} s"
    elif shortage == "tokens":
        what = f"{limits.tokens_per_minute} tokens per minute; retry in {wait} s"
    else:
        what = (
            f"{limits.max_concurrent_requests} concurrent requests; a place frees when one of them ends, "
            f"retry in {wait} s"
        )
    return RateLimitExceededError(
        f"project rate limit reached: {what}",
        retry_after=wait,
        reason=_REASONS[shortage],
        limit_headers=limit_headers(limits, remaining_requests, remaining_tokens),
    )


@dataclass(slots=True)
class _Bucket:
    level: float
    updated: float

    def refill(self, capacity: int, now: float) -> None:
        """Add what flowed in since the last call, clamped to `capacity` (which also applies a lowered limit)."""
        gained = max(0.0, now - self.updated) * capacity / SECONDS_PER_MINUTE
        self.level = min(float(capacity), self.level + gained)
        self.updated = now


class InProcessLimiter:
    """Buckets in this process. No method awaits, so each call is atomic on the event loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}
        self._num_in_flight: dict[str, int] = {}

    async def check(self, scope: str, limits: RateLimits) -> None:
        self._refuse_if_short(scope, limits, 1)

    async def acquire(self, scope: str, limits: RateLimits, num_tokens: int) -> Lease:
        check_fits(limits, num_tokens)
        requests, tokens = self._refuse_if_short(scope, limits, num_tokens)
        if requests is not None:
            requests.level -= 1
        if tokens is not None:
            tokens.level -= num_tokens
        num_requests_left = requests.level if requests is not None else 0.0
        num_tokens_left = tokens.level if tokens is not None else 0.0
        # Counted even without a concurrency limit, so a limit set later sees the requests already running.
        self._num_in_flight[scope] = self._num_in_flight.get(scope, 0) + 1
        return Lease(
            scope=scope,
            lease_id=uuid.uuid4().hex,
            reserved_tokens=num_tokens,
            limit_headers=limit_headers(limits, num_requests_left, num_tokens_left),
            has_concurrency_place=True,
            tokens_per_minute=limits.tokens_per_minute,
        )

    def _refuse_if_short(
        self, scope: str, limits: RateLimits, num_tokens: int
    ) -> tuple[_Bucket | None, _Bucket | None]:
        """The scope's buckets refilled to now; raises the refusal when any limit is short of room."""
        now = self._clock()
        rpm, tpm, max_concurrent = limits.requests_per_minute, limits.tokens_per_minute, limits.max_concurrent_requests
        requests = self._bucket(self._requests, scope, rpm, now)
        tokens = self._bucket(self._tokens, scope, tpm, now)
        num_requests_left = requests.level if requests is not None else 0.0
        num_tokens_left = tokens.level if tokens is not None else 0.0
        if requests is not None and rpm is not None and requests.level < 1:
            wait = seconds_to_refill(1 - requests.level, rpm)
            raise refusal(limits, "requests", wait, num_requests_left, num_tokens_left)
        if tokens is not None and tpm is not None and tokens.level < num_tokens:
            wait = seconds_to_refill(num_tokens - tokens.level, tpm)
            raise refusal(limits, "tokens", wait, num_requests_left, num_tokens_left)
        if max_concurrent is not None and self._num_in_flight.get(scope, 0) >= max_concurrent:
            raise refusal(limits, "concurrency", 1, num_requests_left, num_tokens_left)
        return requests, tokens

    def release(self, lease: Lease, used_tokens: int) -> None:
        if lease.is_released:
            return
        lease.is_released = True
        if lease.has_concurrency_place:
            self._num_in_flight[lease.scope] = max(0, self._num_in_flight.get(lease.scope, 0) - 1)
        tokens = self._tokens.get(lease.scope)
        if tokens is not None and lease.tokens_per_minute is not None:
            tokens.refill(lease.tokens_per_minute, self._clock())
            refund = lease.reserved_tokens - used_tokens
            tokens.level = min(float(lease.tokens_per_minute), tokens.level + refund)

    async def ping(self) -> None:
        return None  # this process is up, or nobody is asking

    async def aclose(self) -> None:
        return None

    def _bucket(self, buckets: dict[str, _Bucket], scope: str, capacity: int | None, now: float) -> _Bucket | None:
        """The scope's bucket refilled to now; None (and forgotten) while the limit is unset."""
        if capacity is None:
            buckets.pop(scope, None)
            return None
        bucket = buckets.get(scope)
        if bucket is None:
            bucket = buckets[scope] = _Bucket(level=float(capacity), updated=now)
        bucket.refill(capacity, now)
        return bucket
