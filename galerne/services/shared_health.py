"""Deployment health shared by the replicas of a gateway, through the Redis they already share for limits.

When one replica takes a deployment out of rotation it writes a key with a time to live; every replica reads
its deployments' keys every `health_check_seconds` and takes out those another replica found failing, so
clients of the other replicas do not each pay for discovering a dead upstream. Each replica then checks the
deployment itself (`Engine.probe`); the replica that sees it answer again deletes the key, and the one that
still sees it down writes the key again. Sharing is best effort: with Redis unreachable each replica keeps
its own view (logged once a minute at most), and requests are never refused for it.

Example::

    board = SharedHealth("redis://127.0.0.1:6379/0")
    await board.mark_out("mistral-small/gpu-a", ttl_seconds=30)
    await board.out_of(["mistral-small/gpu-a", "mistral-small/gpu-b"])   # {"mistral-small/gpu-a"}
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

PREFIX = "galerne:deployment-out:"
_QUIET_SECONDS = 60.0


class SharedHealth:
    def __init__(self, url: str, *, timeout_seconds: float = 1.0) -> None:
        self._client: redis.Redis = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_seconds, socket_timeout=timeout_seconds
        )
        self._warned_at = -_QUIET_SECONDS

    async def mark_out(self, key: str, *, ttl_seconds: float) -> None:
        try:
            await self._client.set(PREFIX + key, b"1", px=max(1, int(ttl_seconds * 1000)))
        except RedisError as exc:
            self._warn(exc)

    async def mark_up(self, key: str) -> None:
        try:
            await self._client.delete(PREFIX + key)
        except RedisError as exc:
            self._warn(exc)

    async def out_of(self, keys: list[str]) -> set[str]:
        """Those of `keys` some replica has out of rotation now (none when Redis cannot say)."""
        try:
            values = await self._client.mget([PREFIX + key for key in keys])
        except RedisError as exc:
            self._warn(exc)
            return set()
        return {key for key, value in zip(keys, values, strict=True) if value is not None}

    async def aclose(self) -> None:
        await self._client.aclose()

    def _warn(self, exc: RedisError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _QUIET_SECONDS:
            self._warned_at = now
            logger.warning("deployment health is not shared with other replicas for now (Redis: %s)", exc)
