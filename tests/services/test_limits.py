"""Token buckets and concurrency, in process and in Redis: exact admission, refunds, all-or-nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from galerne.errors import RateLimitExceededError
from galerne.services.limits import InProcessLimiter, Limiter, RateLimits
from galerne.services.redis_limits import RedisLimiter

REDIS_URL = "redis://127.0.0.1:6379/0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["in-process", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    if request.param == "in-process":
        yield InProcessLimiter()
        return
    if not redis_available():
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    made = RedisLimiter(REDIS_URL, lease_seconds=1)
    yield made
    await made.aclose()


def scope() -> str:
    return f"test-{uuid.uuid4().hex}"


async def test_fifty_concurrent_acquires_against_twenty_per_minute_admit_exactly_twenty(limiter: Limiter) -> None:
    project, limits = scope(), RateLimits(requests_per_minute=20)
    outcomes = await asyncio.gather(*(limiter.acquire(project, limits, 1) for _ in range(50)), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, RateLimitExceededError)]
    assert len(refused) == 30 and len(outcomes) - len(refused) == 20
    assert refused[0].limit_headers["x-ratelimit-remaining-req-minute"] == "0"
    assert refused[0].retry_after == 3  # one request refills in 60/20 s


async def test_tokens_are_reserved_refunded_and_all_or_nothing(limiter: Limiter) -> None:
    project, limits = scope(), RateLimits(requests_per_minute=100, tokens_per_minute=1000)
    first = await limiter.acquire(project, limits, 700)
    assert first.limit_headers["x-ratelimit-remaining-tokens-minute"] in {"300", "301"}
    with pytest.raises(RateLimitExceededError, match="1000 tokens per minute") as refused:
        await limiter.acquire(project, limits, 400)
    assert refused.value.retry_after >= 6  # ~100 tokens short at 1000/60 per second
    limiter.release(first, used_tokens=100)  # 600 of the 700 come back
    await asyncio.sleep(0.05)  # Redis releases are scheduled
    second = await limiter.acquire(project, limits, 400)
    remaining = int(second.limit_headers["x-ratelimit-remaining-tokens-minute"])
    assert 500 <= remaining <= 502
    # The refused acquire took no request either: 100 - 2 admitted.
    assert int(second.limit_headers["x-ratelimit-remaining-req-minute"]) == 98


async def test_a_request_larger_than_the_limit_can_never_pass(limiter: Limiter) -> None:
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.acquire(scope(), RateLimits(tokens_per_minute=100), 101)
    assert refused.value.code == "request_exceeds_token_limit" and "max_tokens" in refused.value.message


async def test_concurrency_places_are_held_until_released(limiter: Limiter) -> None:
    project, limits = scope(), RateLimits(max_concurrent_requests=2)
    leases = [await limiter.acquire(project, limits, 1) for _ in range(2)]
    with pytest.raises(RateLimitExceededError, match="2 concurrent requests"):
        await limiter.acquire(project, limits, 1)
    limiter.release(leases[0], 1)
    limiter.release(leases[0], 1)  # twice is harmless
    await asyncio.sleep(0.05)
    await limiter.acquire(project, limits, 1)
    with pytest.raises(RateLimitExceededError):
        await limiter.acquire(project, limits, 1)


async def test_no_limits_admit_everything(limiter: Limiter) -> None:
    for _ in range(100):
        lease = await limiter.acquire("unlimited", RateLimits(), 10_000)
        assert lease.limit_headers == {}


async def test_buckets_refill_with_time_and_follow_changed_limits() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter(clock)
    limits = RateLimits(requests_per_minute=60, tokens_per_minute=600)
    for _ in range(60):
        await limiter.acquire("p", limits, 1)
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.acquire("p", limits, 1)
    assert refused.value.retry_after == 1
    clock.now += 5  # five requests and 50 tokens come back
    for _ in range(5):
        await limiter.acquire("p", limits, 1)
    with pytest.raises(RateLimitExceededError):
        await limiter.acquire("p", limits, 1)
    lowered = RateLimits(requests_per_minute=10)
    clock.now += 600
    leases = [await limiter.acquire("p", lowered, 1) for _ in range(10)]  # full again, but only 10 now
    with pytest.raises(RateLimitExceededError, match="10 requests per minute"):
        await limiter.acquire("p", lowered, 1)
    assert leases[-1].limit_headers["x-ratelimit-limit-req-minute"] == "10"


async def test_using_more_than_reserved_takes_the_excess() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter(clock)
    limits = RateLimits(tokens_per_minute=100)
    lease = await limiter.acquire("p", limits, 50)
    limiter.release(lease, used_tokens=80)
    with pytest.raises(RateLimitExceededError):
        await limiter.acquire("p", limits, 21)
    await limiter.acquire("p", limits, 20)


@pytest.mark.skipif(not redis_available(), reason="Redis is not reachable")
async def test_a_dead_replicas_concurrency_place_lapses() -> None:
    project, limits = scope(), RateLimits(max_concurrent_requests=1)
    dead = RedisLimiter(REDIS_URL, lease_seconds=0.5)
    await dead.acquire(project, limits, 1)  # never released: the replica "died"
    await dead.aclose()
    alive = RedisLimiter(REDIS_URL, lease_seconds=0.5)
    with pytest.raises(RateLimitExceededError):
        await alive.acquire(project, limits, 1)
    await asyncio.sleep(0.6)
    await alive.acquire(project, limits, 1)
    await alive.aclose()


_CHILD = """
import asyncio, sys
from galerne.errors import RateLimitExceededError
from galerne.services.limits import RateLimits
from galerne.services.redis_limits import RedisLimiter

async def main():
    limiter = RedisLimiter(sys.argv[1])
    async def one():
        try:
            await limiter.acquire(sys.argv[2], RateLimits(requests_per_minute=25), 1)
            return 1
        except RateLimitExceededError:
            return 0
    print(sum(await asyncio.gather(*(one() for _ in range(40)))))
    await limiter.aclose()

asyncio.run(main())
"""


@pytest.mark.skipif(not redis_available(), reason="Redis is not reachable")
def test_two_processes_share_one_limit_exactly() -> None:
    project = scope()
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, REDIS_URL, project], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    admitted = [int(child.communicate(timeout=60)[0]) for child in children]
    assert sum(admitted) == 25, admitted
