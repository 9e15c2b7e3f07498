"""Who is calling: an API key resolved to its project, its limits and what it may use.

Lookups are cached for a few seconds per key id, so a busy key costs one hash and one dict lookup per
request rather than a database round trip; revoking or changing a project takes effect within
`cache_seconds` on every replica, and at once on the replica that made the change (`forget`).

Example::

    principal = await authenticator.authenticate("gal-3f9a0c1b2d4e.q9L...")
    principal.may_use("smollm2-135m-instruct")
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from galerne.errors import AuthenticationError, DatabaseUnavailableError
from galerne.services.keys import parse_key, secret_matches
from galerne.services.limits import RateLimits
from galerne.storage import tenancy
from galerne.storage.database import Database
from galerne.storage.tables import ApiKey, Project

logger = logging.getLogger(__name__)

MAX_CACHED_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `project_id` is None only when the server runs with `--no-auth`."""

    key_id: str | None
    project_id: str | None
    project_name: str
    is_admin: bool = False
    limits: RateLimits = field(default_factory=RateLimits)
    allowed_models: frozenset[str] | None = None
    monthly_token_budget: int | None = None
    monthly_budget_micros: int | None = None
    user_id: str | None = None  # set for a chat web-app user (no key): their traffic is metered as `user:<id>`
    policy: str | None = None  # the project's moderation policy (a catalogue name), besides the model's

    @property
    def usage_key(self) -> str | None:
        """What usage records name as the key: the API key's id, or `user:<id>` for web-app chat traffic."""
        if self.key_id is None and self.user_id is not None:
            return f"user:{self.user_id}"
        return self.key_id

    @classmethod
    def anonymous(cls) -> Principal:
        """The caller of a `--no-auth` server: no limits, every model, but no admin API — whoever can reach
        the port is not thereby an operator (the CLI is the operator's tool)."""
        return cls(key_id=None, project_id=None, project_name="(no auth)", is_admin=False)

    def may_use(self, model_id: str) -> bool:
        return self.allowed_models is None or model_id in self.allowed_models


@dataclass(frozen=True, slots=True)
class _CachedKey:
    secret_hash: str
    principal: Principal | None  # None: the key exists but cannot be used; `refusal` says why
    refusal: str
    expires_at: datetime | None
    fetched_at: float


class Authenticator:
    def __init__(
        self,
        database: Database,
        *,
        cache_seconds: float = 1.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._database = database
        self._cache_seconds = cache_seconds
        self._now = clock or (lambda: datetime.now(UTC))
        self._cache: dict[str, _CachedKey] = {}

    async def authenticate(self, token: str | None) -> Principal:
        """The key's principal, or 401 saying what is wrong (missing, malformed, unknown, revoked, expired)."""
        if not token:
            raise AuthenticationError(
                "no API key: send `Authorization: Bearer <key>` (or `api-key: <key>`); "
                "an operator creates keys with `galerne keys create`"
            )
        parsed = parse_key(token)
        if parsed is None:
            raise AuthenticationError("the API key is malformed; Galerne keys look like gal-<id>.<secret>")
        key_id, secret = parsed
        cached = self._cache.get(key_id)
        if cached is None or time.monotonic() - cached.fetched_at > self._cache_seconds:
            try:
                cached = await asyncio.to_thread(self._load, key_id)
            except SQLAlchemyError as exc:
                logger.warning("looking up an API key failed (database %s): %s", self._database.location(), exc)
                raise DatabaseUnavailableError(
                    "the database is unreachable, so API keys cannot be checked; retry shortly "
                    "(the operator finds the cause in the server log)"
                ) from exc
            self._cache.pop(key_id, None)
            self._cache[key_id] = cached
            if len(self._cache) > MAX_CACHED_KEYS:  # random ids must not grow memory without end
                del self._cache[next(iter(self._cache))]
        if not secret_matches(secret, cached.secret_hash):
            raise AuthenticationError("invalid API key")
        if cached.principal is None:
            raise AuthenticationError(cached.refusal)
        if cached.expires_at is not None and cached.expires_at <= self._now():
            raise AuthenticationError("this API key (or its project) has expired")
        return cached.principal

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached keys (one, or all) after the operator changed them through this process."""
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)

    def _load(self, key_id: str) -> _CachedKey:
        fetched_at = time.monotonic()
        with self._database.session() as session:
            key = tenancy.find_key(session, key_id)
            if key is None:
                # An unknown id still costs a hash comparison, so its timing matches a wrong secret.
                return _CachedKey("0" * 64, None, "invalid API key", None, fetched_at)
            return _CachedKey(key.secret_hash, *_principal_or_refusal(key), _expiry(key), fetched_at)


def _principal_or_refusal(key: ApiKey) -> tuple[Principal | None, str]:
    project = key.project
    if key.revoked_at is not None:
        return None, "this API key was revoked"
    if project.is_disabled:
        return None, f"project {project.name!r} is disabled; ask the operator"
    return project_principal(project, key_id=key.id, is_admin=key.is_admin), ""


def project_principal(
    project: Project, *, key_id: str | None = None, is_admin: bool = False, user_id: str | None = None
) -> Principal:
    """The caller as its project's limits, budgets and allowed models see it (an API key or a chat user)."""
    return Principal(
        key_id=key_id,
        project_id=project.id,
        project_name=project.name,
        is_admin=is_admin,
        limits=RateLimits(
            requests_per_minute=project.requests_per_minute,
            tokens_per_minute=project.tokens_per_minute,
            max_concurrent_requests=project.max_concurrent_requests,
        ),
        allowed_models=frozenset(project.allowed_models) if project.allowed_models is not None else None,
        monthly_token_budget=project.monthly_token_budget,
        monthly_budget_micros=project.monthly_budget_micros,
        user_id=user_id,
        policy=project.policy,
    )


def _expiry(key: ApiKey) -> datetime | None:
    moments = [moment for moment in (key.expires_at, key.project.expires_at) if moment is not None]
    return min(moments) if moments else None
