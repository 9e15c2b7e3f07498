"""Login rate limiting through the platform's limiters: in this process, and in real Redis shared by replicas."""

from __future__ import annotations

import uuid

import pytest

from galerne.errors import RateLimitExceededError
from galerne.services.limits import InProcessLimiter, Limiter
from galerne.services.login_limits import LoginThrottle
from galerne.services.redis_limits import RedisLimiter
from tests.databases import require_redis


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_five_failures_a_minute_then_429_until_the_bucket_refills() -> None:
    clock = Clock()
    throttle = LoginThrottle(InProcessLimiter(clock=clock), attempts_per_minute=5)
    for _ in range(5):
        await throttle.check("ada@example.org", "10.0.0.1")
        await throttle.record_failure("ada@example.org", "10.0.0.1")
    with pytest.raises(RateLimitExceededError) as refused:
        await throttle.check("Ada@Example.org", "10.0.0.1")  # the same account, however it is typed
    assert refused.value.code == "too_many_login_attempts"
    assert refused.value.retry_after == 12  # one more try every 60/5 s
    assert refused.value.headers()["Retry-After"] == "12"
    await throttle.check("ada@example.org", "10.0.0.2")  # another address is its own pair
    await throttle.check("bob@example.org", "10.0.0.1")  # and so is another account
    clock.now += 12
    await throttle.check("ada@example.org", "10.0.0.1")


async def test_failures_are_shared_by_replicas_through_redis() -> None:
    url = require_redis()
    prefix = f"galerne-test:{uuid.uuid4().hex}"
    replicas: list[Limiter] = [RedisLimiter(url, prefix=prefix), RedisLimiter(url, prefix=prefix)]
    try:
        throttles = [LoginThrottle(limiter, attempts_per_minute=5) for limiter in replicas]
        for attempt in range(5):  # alternate replicas, as a load balancer would
            await throttles[attempt % 2].record_failure("cy@example.org", "192.0.2.7")
        for throttle in throttles:
            with pytest.raises(RateLimitExceededError) as refused:
                await throttle.check("cy@example.org", "192.0.2.7")
            assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 12
    finally:
        for limiter in replicas:
            await limiter.aclose()
