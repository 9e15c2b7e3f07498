"""Login rate limiting: failed logins per account and client address, in the platform's own limiter.

Each (e-mail, address) pair has a token bucket of `attempts_per_minute` failures, kept by the same
limiter as the projects' limits — in Redis when replicas share one, so the bound holds across them. A
login is checked before its password is (a correct password does not get through an exhausted bucket);
only failures take from the bucket, and it refills continuously (5 per minute: one more try every 12 s).

Example::

    throttle = LoginThrottle(limiter, attempts_per_minute=5)
    await throttle.check(email, address)        # 429 with Retry-After when too many failed
    ...
    await throttle.record_failure(email, address)
"""

from __future__ import annotations

import hashlib

from galerne.errors import RateLimitExceededError
from galerne.services.limits import Limiter, RateLimits


class LoginThrottle:
    def __init__(self, limiter: Limiter, attempts_per_minute: int = 5) -> None:
        self._limiter = limiter
        self._limits = RateLimits(requests_per_minute=attempts_per_minute)

    async def check(self, email: str, address: str) -> None:
        """Raise 429 (`too_many_login_attempts`, with Retry-After) when this pair failed too often lately."""
        try:
            await self._limiter.check(_scope(email, address), self._limits)
        except RateLimitExceededError as exc:
            raise RateLimitExceededError(
                f"too many failed logins; retry in {exc.retry_after} s",
                retry_after=exc.retry_after,
                code="too_many_login_attempts",
            ) from exc

    async def record_failure(self, email: str, address: str) -> None:
        """Take one failure from the pair's bucket (an already empty bucket stays empty)."""
        try:
            lease = await self._limiter.acquire(_scope(email, address), self._limits, 0)
        except RateLimitExceededError:
            return
        self._limiter.release(lease, 0)


def _scope(email: str, address: str) -> str:
    """A limiter scope that names neither the address nor the e-mail (limiter keys may be logged or listed)."""
    digest = hashlib.sha256(f"{email.strip().lower()}\n{address}".encode()).hexdigest()[:32]
    return f"login:{digest}"
