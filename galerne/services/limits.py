"""Per-project rate limits: token buckets for requests and tokens per minute, and a concurrency count.

A bucket holds up to the per-minute limit and refills continuously at limit/60 per second, so a quiet
project may burst up to its limit. `acquire` is all or nothing: one request, the reserved tokens and a
concurrency place are taken together or not at all. `release` gives the place back and refunds the
tokens the request did not use.

`InProcessLimiter` keeps the buckets in this process (one replica); `RedisLimiter`
(`galerne.services.redis_limits`) keeps them in Redis so several replicas share them.

Example::

    limiter = build_limiter(settings.redis_url)
    lease = await limiter.acquire(project_id, RateLimits(requests_per_minute=20), num_tokens=900)
    ...
    limiter.release(lease, used_tokens=312)
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from galerne.errors import RateLimitExceededError

SECONDS_PER_MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A project's limits; None means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_requests: int | None = None


@dataclass(slots=True)
class Lease:
    """What one admitted request holds until it is released."""

    scope: str
    lease_id: str
    reserved_tokens: int
    limit_headers: dict[str, str] = field(default_factory=dict)
    has_concurrency_place: bool = False
    tokens_per_minute: int | None = None
    is_released: bool = False


class Limiter(Protocol):
    async def acquire(self, scope: str, limits: RateLimits, num_tokens: int) -> Lease: ...

    def release(self, lease: Lease, used_tokens: int) -> None: ...

    async def aclose(self) -> None: ...


def build_limiter(redis_url: str | None) -> Limiter:
    """Redis-backed when a URL is given (shared by replicas), in-process otherwise."""
    if redis_url:
        from galerne.services.redis_limits import RedisLimiter

        return RedisLimiter(redis_url)
    return InProcessLimiter()


def limit_headers(limits: RateLimits, remaining_requests: float, remaining_tokens: float) -> dict[str, str]:
    """la Plateforme's `x-ratelimit-*` headers, for the limits that are set."""
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
            limit_headers=limit_headers(limits, 0, 0),
        )


def refusal(
    limits: RateLimits, reason: str, retry_after: float, requests: float, tokens: float
) -> RateLimitExceededError:
    """The 429 for a refused acquire; `reason` is "requests", "tokens" or "concurrency"."""
    wait = max(1, math.ceil(retry_after))
    if reason == "requests":
        what = f"{limits.requests_per_minute} requests per minute"
    elif reason == "tokens":
        what = f"{limits.tokens_per_minute} tokens per minute"
    else:
        what = f"{limits.max_concurrent_requests} concurrent requests"
    return RateLimitExceededError(
        f"project rate limit reached: {what}; retry in {wait} s",
        retry_after=wait,
        limit_headers=limit_headers(limits, requests, tokens),
    )


@dataclass(slots=True)
class _Bucket:
    level: float
    updated: float

    def refill(self, capacity: int, now: float) -> None:
        rate = capacity / SECONDS_PER_MINUTE
        self.level = min(float(capacity), self.level + (now - self.updated) * rate)
        self.updated = now


class InProcessLimiter:
    """Buckets in this process. Every method runs without awaiting, so each call is atomic on the loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}
        self._in_flight: dict[str, int] = {}

    async def acquire(self, scope: str, limits: RateLimits, num_tokens: int) -> Lease:
        check_fits(limits, num_tokens)
        now = self._clock()
        requests = self._bucket(self._requests, scope, limits.requests_per_minute, now)
        tokens = self._bucket(self._tokens, scope, limits.tokens_per_minute, now)
        remaining_requests = requests.level if requests else 0.0
        remaining_tokens = tokens.level if tokens else 0.0
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        if requests is not None and rpm is not None and requests.level < 1:
            wait = (1 - requests.level) / (rpm / SECONDS_PER_MINUTE)
            raise refusal(limits, "requests", wait, remaining_requests, remaining_tokens)
        if tokens is not None and tpm is not None and tokens.level < num_tokens:
            wait = (num_tokens - tokens.level) / (tpm / SECONDS_PER_MINUTE)
            raise refusal(limits, "tokens", wait, remaining_requests, remaining_tokens)
        in_flight = self._in_flight.get(scope, 0)
        if limits.max_concurrent_requests is not None and in_flight >= limits.max_concurrent_requests:
            raise refusal(limits, "concurrency", 1, remaining_requests, remaining_tokens)
        if requests is not None:
            requests.level -= 1
        if tokens is not None:
            tokens.level -= num_tokens
        self._in_flight[scope] = in_flight + 1
        return Lease(
            scope=scope,
            lease_id=uuid.uuid4().hex,
            reserved_tokens=num_tokens,
            limit_headers=limit_headers(
                limits, requests.level if requests else 0.0, tokens.level if tokens else 0.0
            ),
            has_concurrency_place=True,
            tokens_per_minute=tpm,
        )

    def release(self, lease: Lease, used_tokens: int) -> None:
        if lease.is_released:
            return
        lease.is_released = True
        if lease.has_concurrency_place:
            self._in_flight[lease.scope] = max(0, self._in_flight.get(lease.scope, 0) - 1)
        tokens = self._tokens.get(lease.scope)
        if tokens is not None and lease.tokens_per_minute is not None:
            tokens.refill(lease.tokens_per_minute, self._clock())
            refund = lease.reserved_tokens - used_tokens
            tokens.level = min(float(lease.tokens_per_minute), tokens.level + refund)

    async def aclose(self) -> None:
        return None

    def _bucket(self, buckets: dict[str, _Bucket], scope: str, capacity: int | None, now: float) -> _Bucket | None:
        """The scope's bucket, refilled to now; clamped when the operator lowered the limit."""
        if capacity is None:
            buckets.pop(scope, None)
            return None
        bucket = buckets.get(scope)
        if bucket is None:
            bucket = buckets[scope] = _Bucket(level=float(capacity), updated=now)
        bucket.refill(capacity, now)
        return bucket
