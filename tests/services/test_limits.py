"""The in-process token buckets on a fake clock: exact admissions, refills, refunds, all-or-nothing, headers."""

from __future__ import annotations

import asyncio

import pytest

from galerne.errors import RateLimitExceededError
from galerne.services.limits import InProcessLimiter, Lease, RateLimits, build_limiter
from galerne.services.redis_limits import RedisLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> InProcessLimiter:
    return InProcessLimiter(clock)


async def refused(limiter: InProcessLimiter, limits: RateLimits, num_tokens: int = 1) -> RateLimitExceededError:
    with pytest.raises(RateLimitExceededError) as caught:
        await limiter.acquire("p", limits, num_tokens)
    return caught.value


async def test_twenty_per_minute_admits_twenty_then_asks_to_retry_in_three_seconds(limiter: InProcessLimiter) -> None:
    limits = RateLimits(requests_per_minute=20)
    leases = [await limiter.acquire("p", limits, 1) for _ in range(20)]
    assert [lease.limit_headers["x-ratelimit-remaining-req-minute"] for lease in leases] == [
        str(n) for n in range(19, -1, -1)
    ]
    error = await refused(limiter, limits)
    assert error.retry_after == 3 and error.code == "rate_limit_exceeded"
    assert error.message == "project rate limit reached: 20 requests per minute; retry in 3 s"
    assert error.headers() == {
        "Retry-After": "3",
        "x-ratelimit-limit-req-minute": "20",
        "x-ratelimit-remaining-req-minute": "0",
    }


async def test_fifty_concurrent_acquires_against_twenty_per_minute_admit_exactly_twenty() -> None:
    limiter = InProcessLimiter()
    limits = RateLimits(requests_per_minute=20)
    outcomes = await asyncio.gather(*(limiter.acquire("p", limits, 1) for _ in range(50)), return_exceptions=True)
    assert sum(isinstance(outcome, Lease) for outcome in outcomes) == 20
    assert sum(isinstance(outcome, RateLimitExceededError) for outcome in outcomes) == 30


async def test_requests_refill_continuously(limiter: InProcessLimiter, clock: FakeClock) -> None:
    limits = RateLimits(requests_per_minute=20)
    for _ in range(20):
        await limiter.acquire("p", limits, 1)
    clock.now += 1.5  # half a request
    assert (await refused(limiter, limits)).retry_after == 2  # 1.5 s more, rounded up
    clock.now += 1.5
    lease = await limiter.acquire("p", limits, 1)
    assert lease.limit_headers["x-ratelimit-remaining-req-minute"] == "0"
    await refused(limiter, limits)
    clock.now += 3600  # never more than the limit
    for _ in range(20):
        await limiter.acquire("p", limits, 1)
    await refused(limiter, limits)


async def test_tokens_are_reserved_then_the_unused_part_refunded(limiter: InProcessLimiter, clock: FakeClock) -> None:
    limits = RateLimits(tokens_per_minute=1000)
    first = await limiter.acquire("p", limits, 700)
    assert first.reserved_tokens == 700
    assert first.limit_headers == {
        "x-ratelimit-limit-tokens-minute": "1000",
        "x-ratelimit-remaining-tokens-minute": "300",
    }
    error = await refused(limiter, limits, 400)
    assert error.retry_after == 6  # 100 short at 1000/60 per second
    assert error.message == "project rate limit reached: 1000 tokens per minute; retry in 6 s"
    limiter.release(first, used_tokens=100)  # 600 come back
    second = await limiter.acquire("p", limits, 400)
    assert second.limit_headers["x-ratelimit-remaining-tokens-minute"] == "500"


async def test_a_refund_never_fills_the_bucket_past_its_limit(limiter: InProcessLimiter, clock: FakeClock) -> None:
    limits = RateLimits(tokens_per_minute=1000)
    lease = await limiter.acquire("p", limits, 500)
    clock.now += 60  # full again while the request ran
    limiter.release(lease, used_tokens=0)
    await limiter.acquire("p", limits, 1000)
    await refused(limiter, limits, 1)


async def test_using_more_than_reserved_takes_the_excess(limiter: InProcessLimiter, clock: FakeClock) -> None:
    limits = RateLimits(tokens_per_minute=600)
    lease = await limiter.acquire("p", limits, 500)
    limiter.release(lease, used_tokens=800)  # bucket at -200
    error = await refused(limiter, limits, 10)
    assert error.retry_after == 21  # 210 tokens at 10 per second
    assert error.limit_headers["x-ratelimit-remaining-tokens-minute"] == "0"  # never negative
    clock.now += 21
    await limiter.acquire("p", limits, 10)


async def test_concurrency_places_are_held_until_released(limiter: InProcessLimiter) -> None:
    limits = RateLimits(max_concurrent_requests=2)
    first, _ = [await limiter.acquire("p", limits, 1) for _ in range(2)]
    error = await refused(limiter, limits)
    assert error.retry_after == 1 and error.message == (
        "project rate limit reached: 2 concurrent requests; a place frees when one of them ends, retry in 1 s"
    )
    assert error.limit_headers == {}  # la Plateforme has no concurrency header
    limiter.release(first, 1)
    limiter.release(first, 1)  # twice frees one place, not two
    await limiter.acquire("p", limits, 1)
    await refused(limiter, limits)


async def test_a_refusal_takes_nothing_from_the_other_limits(limiter: InProcessLimiter) -> None:
    limits = RateLimits(requests_per_minute=10, tokens_per_minute=1000, max_concurrent_requests=1)
    held = await limiter.acquire("p", limits, 900)
    await refused(limiter, limits, 200)  # tokens short: no request taken
    limiter.release(held, used_tokens=900)
    held = await limiter.acquire("p", limits, 50)
    await refused(limiter, limits, 10)  # concurrency short: no request, no tokens taken
    limiter.release(held, used_tokens=50)
    lease = await limiter.acquire("p", limits, 10)
    assert lease.limit_headers == {
        "x-ratelimit-limit-req-minute": "10",
        "x-ratelimit-remaining-req-minute": "7",
        "x-ratelimit-limit-tokens-minute": "1000",
        "x-ratelimit-remaining-tokens-minute": "40",
    }


async def test_a_request_larger_than_the_token_limit_can_never_pass(limiter: InProcessLimiter) -> None:
    limits = RateLimits(requests_per_minute=5, tokens_per_minute=100)
    error = await refused(limiter, limits, 101)
    assert error.code == "request_exceeds_token_limit" and error.status == 429
    assert "needs 101 tokens (prompt + max_tokens)" in error.message
    assert "allows 100 tokens per minute" in error.message and "lower max_tokens" in error.message
    assert error.retry_after is None  # no wait can make it fit: no promise of one, and SDKs must not retry
    assert error.headers() == {
        "x-should-retry": "false",
        "x-ratelimit-limit-req-minute": "5",
        "x-ratelimit-remaining-req-minute": "0",
        "x-ratelimit-limit-tokens-minute": "100",
        "x-ratelimit-remaining-tokens-minute": "0",
    }
    lease = await limiter.acquire("p", limits, 100)  # it took nothing
    assert lease.limit_headers["x-ratelimit-remaining-req-minute"] == "4"


async def test_limits_changed_by_the_operator_apply_at_the_next_call(
    limiter: InProcessLimiter, clock: FakeClock
) -> None:
    await limiter.acquire("p", RateLimits(requests_per_minute=60), 1)  # 59 left
    lowered = RateLimits(requests_per_minute=10)
    leases = [await limiter.acquire("p", lowered, 1) for _ in range(10)]  # clamped to 10
    assert leases[0].limit_headers["x-ratelimit-limit-req-minute"] == "10"
    assert (await refused(limiter, lowered)).message.startswith("project rate limit reached: 10 requests per minute")
    raised = RateLimits(requests_per_minute=120)
    clock.now += 1  # refills at the new rate: 2 per second
    for _ in range(2):
        await limiter.acquire("p", raised, 1)
    await refused(limiter, raised)
    for _ in range(100):  # the limit lifted
        assert (await limiter.acquire("p", RateLimits(), 1)).limit_headers == {}


async def test_scopes_have_their_own_buckets(limiter: InProcessLimiter) -> None:
    limits = RateLimits(requests_per_minute=1)
    await limiter.acquire("a", limits, 1)
    await limiter.acquire("b", limits, 1)
    with pytest.raises(RateLimitExceededError):
        await limiter.acquire("a", limits, 1)


async def test_no_limits_admit_everything_without_headers(limiter: InProcessLimiter) -> None:
    for _ in range(100):
        lease = await limiter.acquire("p", RateLimits(), 10_000)
        assert lease.limit_headers == {}
        limiter.release(lease, 20_000)


async def test_build_limiter_picks_redis_only_with_a_url() -> None:
    assert isinstance(build_limiter(None), InProcessLimiter)
    made = build_limiter("redis://127.0.0.1:6379/0")  # connects lazily
    assert isinstance(made, RedisLimiter)
    await made.aclose()


async def test_check_refuses_what_acquire_would_and_takes_nothing(limiter: InProcessLimiter) -> None:
    limits = RateLimits(requests_per_minute=2, max_concurrent_requests=5)
    await limiter.check("p", limits)
    await limiter.check("p", limits)
    first = await limiter.acquire("p", limits, 1)
    await limiter.acquire("p", limits, 1)  # the checks took nothing: both requests still fit
    with pytest.raises(RateLimitExceededError, match="2 requests per minute"):
        await limiter.check("p", limits)
    limiter.release(first, 1)
    await limiter.check("q", RateLimits(max_concurrent_requests=1))
