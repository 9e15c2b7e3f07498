"""The Redis limiter on a real server: exact admissions across limiters and processes, refunds, leases that
are renewed while their request runs and lapse when it is lost, and a Redis blip cut through a real proxy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from galerne.errors import LimitStoreUnavailableError, RateLimitExceededError
from galerne.services.limits import Lease, RateLimits
from galerne.services.redis_limits import RedisLimiter
from tests.proxy import TcpProxy, running_proxy

REDIS_URL = "redis://127.0.0.1:6379/0"
PREFIX = "galerne:limits"


@pytest.fixture(scope="module")
def server() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis is not reachable at {REDIS_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI has Redis: a missing server is a broken run, never a silent skip
        pytest.skip(message)
    yield client
    client.close()


@pytest.fixture
def scope(server: redis.Redis) -> Iterator[str]:
    """A project of its own per test; its keys are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex}"
    yield name
    keys = list(server.scan_iter(match=f"{PREFIX}:{{{name}}}:*"))
    if keys:
        server.delete(*keys)


@pytest.fixture
async def limiter(server: redis.Redis) -> AsyncIterator[RedisLimiter]:
    made = RedisLimiter(REDIS_URL)
    yield made
    await made.aclose()


async def test_twenty_per_minute_admits_twenty_then_asks_to_retry_in_three_seconds(
    limiter: RedisLimiter, scope: str
) -> None:
    limits = RateLimits(requests_per_minute=20)
    leases = [await limiter.acquire(scope, limits, 1) for _ in range(20)]
    assert [lease.limit_headers["x-ratelimit-remaining-req-minute"] for lease in leases] == [
        str(n) for n in range(19, -1, -1)
    ]
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.acquire(scope, limits, 1)
    assert refused.value.retry_after == 3
    assert refused.value.message == "project rate limit reached: 20 requests per minute; retry in 3 s"
    assert refused.value.limit_headers == {
        "x-ratelimit-limit-req-minute": "20",
        "x-ratelimit-remaining-req-minute": "0",
    }


async def test_fifty_concurrent_acquires_against_twenty_per_minute_admit_exactly_twenty(
    limiter: RedisLimiter, scope: str
) -> None:
    limits = RateLimits(requests_per_minute=20)
    outcomes = await asyncio.gather(*(limiter.acquire(scope, limits, 1) for _ in range(50)), return_exceptions=True)
    assert sum(isinstance(outcome, Lease) for outcome in outcomes) == 20
    assert sum(isinstance(outcome, RateLimitExceededError) for outcome in outcomes) == 30


async def test_two_limiters_share_one_limit_exactly(server: redis.Redis, scope: str) -> None:
    limits = RateLimits(requests_per_minute=20, max_concurrent_requests=15)
    first, second = RedisLimiter(REDIS_URL), RedisLimiter(REDIS_URL)
    outcomes = await asyncio.gather(
        *(made.acquire(scope, limits, 1) for _ in range(25) for made in (first, second)), return_exceptions=True
    )
    leases = [outcome for outcome in outcomes if isinstance(outcome, Lease)]
    assert len(leases) == 15  # the concurrency limit bites first
    for lease in leases:
        first.release(lease, 1)
    await first.aclose()
    more = [await second.acquire(scope, limits, 1) for _ in range(5)]  # the requests bucket has 5 left
    assert more[-1].limit_headers["x-ratelimit-remaining-req-minute"] == "0"
    with pytest.raises(RateLimitExceededError, match="20 requests per minute"):
        await second.acquire(scope, limits, 1)
    await second.aclose()


_CHILD = """
import asyncio, sys
from galerne.errors import RateLimitExceededError
from galerne.services.limits import RateLimits
from galerne.services.redis_limits import RedisLimiter

async def main():
    limiter = RedisLimiter(sys.argv[1])
    async def one():
        try:
            await limiter.acquire(sys.argv[2], RateLimits(requests_per_minute=25, tokens_per_minute=10_000), 100)
            return 1
        except RateLimitExceededError:
            return 0
    print(sum(await asyncio.gather(*(one() for _ in range(40)))))
    await limiter.aclose()

asyncio.run(main())
"""


def test_two_processes_share_one_limit_exactly(scope: str) -> None:
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, REDIS_URL, scope], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    admitted = [int(child.communicate(timeout=60)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    assert sum(admitted) == 25, admitted


async def test_tokens_are_reserved_refunded_and_all_or_nothing(limiter: RedisLimiter, scope: str) -> None:
    limits = RateLimits(requests_per_minute=100, tokens_per_minute=1000)
    first = await limiter.acquire(scope, limits, 700)
    assert first.limit_headers["x-ratelimit-remaining-tokens-minute"] == "300"
    with pytest.raises(RateLimitExceededError, match="1000 tokens per minute") as refused:
        await limiter.acquire(scope, limits, 400)
    assert refused.value.retry_after == 6  # ~100 short at 1000/60 per second
    limiter.release(first, used_tokens=100)  # 600 of the 700 come back
    limiter.release(first, used_tokens=100)  # once
    await limiter.aclose()  # waits for the scheduled release
    again = RedisLimiter(REDIS_URL)
    second = await again.acquire(scope, limits, 400)
    assert 500 <= int(second.limit_headers["x-ratelimit-remaining-tokens-minute"]) <= 502
    assert second.limit_headers["x-ratelimit-remaining-req-minute"] == "98"  # the refusal took no request
    await again.aclose()


async def test_using_more_than_reserved_takes_the_excess(limiter: RedisLimiter, scope: str) -> None:
    limits = RateLimits(tokens_per_minute=600)
    lease = await limiter.acquire(scope, limits, 500)
    limiter.release(lease, used_tokens=800)  # bucket at about -200
    await limiter.settle()
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.acquire(scope, limits, 10)
    assert refused.value.retry_after == 21  # about 210 tokens at 10 per second
    assert refused.value.limit_headers["x-ratelimit-remaining-tokens-minute"] == "0"


async def test_a_request_larger_than_the_token_limit_can_never_pass(limiter: RedisLimiter, scope: str) -> None:
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.acquire(scope, RateLimits(tokens_per_minute=100), 101)
    assert refused.value.code == "request_exceeds_token_limit"
    assert "needs 101 tokens" in refused.value.message and "lower max_tokens" in refused.value.message


async def test_concurrency_places_are_held_until_released(limiter: RedisLimiter, scope: str) -> None:
    limits = RateLimits(max_concurrent_requests=2)
    first, _ = [await limiter.acquire(scope, limits, 1) for _ in range(2)]
    with pytest.raises(RateLimitExceededError, match="2 concurrent requests") as refused:
        await limiter.acquire(scope, limits, 1)
    assert refused.value.retry_after == 1
    limiter.release(first, 1)
    limiter.release(first, 1)  # twice frees one place, not two
    await limiter.settle()
    await limiter.acquire(scope, limits, 1)
    with pytest.raises(RateLimitExceededError):
        await limiter.acquire(scope, limits, 1)


async def test_a_dead_limiters_place_lapses(scope: str) -> None:
    limits = RateLimits(max_concurrent_requests=1)
    dead = RedisLimiter(REDIS_URL, lease_seconds=1)
    await dead.acquire(scope, limits, 1)  # never released: the replica "died"
    await dead.aclose()
    alive = RedisLimiter(REDIS_URL, lease_seconds=1)
    with pytest.raises(RateLimitExceededError):
        await alive.acquire(scope, limits, 1)
    await asyncio.sleep(1.1)
    await alive.acquire(scope, limits, 1)
    await alive.aclose()


async def test_a_cancelled_acquire_holds_no_place(limiter: RedisLimiter, scope: str) -> None:
    limits = RateLimits(max_concurrent_requests=1)
    for delay in (0, 0.0005, 0.001, 0.002, 0.005):
        task = asyncio.ensure_future(limiter.acquire(scope, limits, 1))
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            limiter.release(await task, 1)  # finished before the cancel
        await limiter.settle()  # the undo, if the script admitted after the cancel
        lease = await limiter.acquire(scope, limits, 1)
        limiter.release(lease, 1)
        await limiter.settle()


async def test_limits_changed_by_the_operator_apply_at_the_next_call(limiter: RedisLimiter, scope: str) -> None:
    await limiter.acquire(scope, RateLimits(requests_per_minute=60), 1)
    lowered = RateLimits(requests_per_minute=10)
    leases = [await limiter.acquire(scope, lowered, 1) for _ in range(10)]  # clamped to 10
    assert leases[0].limit_headers["x-ratelimit-limit-req-minute"] == "10"
    with pytest.raises(RateLimitExceededError, match="10 requests per minute"):
        await limiter.acquire(scope, lowered, 1)
    for _ in range(30):  # the limit lifted
        assert (await limiter.acquire(scope, RateLimits(), 1)).limit_headers == {}


async def test_keys_live_under_the_scope_and_expire_when_idle(
    limiter: RedisLimiter, server: redis.Redis, scope: str
) -> None:
    await limiter.acquire(scope, RateLimits(requests_per_minute=5, tokens_per_minute=100, max_concurrent_requests=3), 1)
    base = f"{PREFIX}:{{{scope}}}"
    assert sorted(key.decode() for key in server.scan_iter(match=f"{base}:*")) == [
        f"{base}:leases",
        f"{base}:requests",
        f"{base}:tokens",
    ]
    assert 0 < server.pttl(f"{base}:requests") <= 120_000
    assert 0 < server.pttl(f"{base}:tokens") <= 120_000
    assert 29_000 < server.pttl(f"{base}:leases") <= 30_000  # short: a lost place heals within 30 s


async def test_no_limits_cost_no_round_trip(limiter: RedisLimiter, server: redis.Redis, scope: str) -> None:
    for _ in range(10):
        limiter.release(await limiter.acquire(scope, RateLimits(), 1000), 2000)
    await limiter.settle()  # were anything scheduled, it would have landed
    assert not list(server.scan_iter(match=f"{PREFIX}:{{{scope}}}:*"))


async def test_an_unreachable_redis_refuses_without_saying_where_it_is(caplog: pytest.LogCaptureFixture) -> None:
    gone = RedisLimiter("redis://127.0.0.1:1/0", timeout_seconds=1)
    with caplog.at_level(logging.WARNING), pytest.raises(LimitStoreUnavailableError) as refused:
        await gone.acquire("p", RateLimits(requests_per_minute=1), 1)
    assert refused.value.status == 503 and refused.value.headers() == {"Retry-After": "5"}
    assert refused.value.message.startswith("the rate-limit store is unreachable; retry shortly")
    assert "127.0.0.1" not in refused.value.message and "Error" not in refused.value.message
    assert "redis://127.0.0.1:1/0 is unreachable" in caplog.text  # the operator is told where
    with pytest.raises(LimitStoreUnavailableError):
        await gone.ping()
    lease = Lease(scope="p", lease_id="x", reserved_tokens=5, has_concurrency_place=True, tokens_per_minute=10)
    with caplog.at_level(logging.WARNING):
        gone.release(lease, 1)
        await gone.aclose()  # gives the retrying release timeout_seconds, then abandons it
    assert "closing with 1 rate-limit releases not done; their places lapse within 30 s" in caplog.text


async def test_a_running_requests_place_is_renewed_until_released(server: redis.Redis, scope: str) -> None:
    limits = RateLimits(max_concurrent_requests=1)
    holder, other = RedisLimiter(REDIS_URL, lease_seconds=0.6), RedisLimiter(REDIS_URL, lease_seconds=0.6)
    lease = await holder.acquire(scope, limits, 1)
    for _ in range(6):  # 1.8 s, three lease times: the heartbeat keeps the place
        await asyncio.sleep(0.3)
        with pytest.raises(RateLimitExceededError):
            await other.acquire(scope, limits, 1)
    holder.release(lease, 1)
    await holder.aclose()
    await other.acquire(scope, limits, 1)
    await other.aclose()


async def test_renewing_never_brings_back_a_place_that_is_gone(
    limiter: RedisLimiter, server: redis.Redis, scope: str
) -> None:
    limits = RateLimits(max_concurrent_requests=3)
    kept, lost = await limiter.acquire(scope, limits, 1), await limiter.acquire(scope, limits, 1)
    leases_key = f"{PREFIX}:{{{scope}}}:leases"
    server.zrem(leases_key, lost.lease_id)  # as if it lapsed or another call released it meanwhile
    assert await limiter.renew() == 1
    assert server.zrange(leases_key, 0, -1) == [kept.lease_id.encode()]


@pytest.fixture
def proxy(server: redis.Redis) -> Iterator[TcpProxy]:
    with running_proxy("127.0.0.1", 6379) as running:
        yield running


async def test_places_released_while_redis_is_cut_come_back_when_it_returns(
    limiter: RedisLimiter, proxy: TcpProxy, scope: str, caplog: pytest.LogCaptureFixture
) -> None:
    limits = RateLimits(max_concurrent_requests=2)
    through_proxy = RedisLimiter(f"redis://127.0.0.1:{proxy.port}/0", timeout_seconds=1)
    leases = [await through_proxy.acquire(scope, limits, 1) for _ in range(2)]
    await asyncio.to_thread(proxy.cut)
    with caplog.at_level(logging.WARNING):
        for lease in leases:  # both requests end while Redis is unreachable
            through_proxy.release(lease, 1)
        await asyncio.sleep(0.5)
        with pytest.raises(LimitStoreUnavailableError) as refused:
            await through_proxy.acquire(scope, limits, 1)
    assert str(proxy.port) not in refused.value.message
    assert f"redis://127.0.0.1:{proxy.port}/0 is unreachable" in caplog.text
    with pytest.raises(RateLimitExceededError, match="2 concurrent requests"):
        await limiter.acquire(scope, limits, 1)  # Redis itself still counts both places
    await asyncio.to_thread(proxy.restore)
    deadline = asyncio.get_running_loop().time() + 5
    num_taken_back = 0
    while num_taken_back < 2:  # each retried release lands on its own, within about a second
        try:
            await limiter.acquire(scope, limits, 1)
            num_taken_back += 1
        except RateLimitExceededError:
            assert asyncio.get_running_loop().time() < deadline, "the places were not given back after the blip"
            await asyncio.sleep(0.1)
    await through_proxy.aclose()


async def test_check_refuses_what_acquire_would_and_takes_nothing(limiter: RedisLimiter, scope: str) -> None:
    limits = RateLimits(requests_per_minute=2, tokens_per_minute=1000, max_concurrent_requests=1)
    for _ in range(3):
        await limiter.check(scope, limits)
    lease = await limiter.acquire(scope, limits, 10)
    assert lease.limit_headers["x-ratelimit-remaining-req-minute"] == "1"  # the checks took nothing
    with pytest.raises(RateLimitExceededError, match="1 concurrent requests"):
        await limiter.check(scope, limits)
    limiter.release(lease, 10)
    await limiter.settle()
    await limiter.check(scope, limits)
