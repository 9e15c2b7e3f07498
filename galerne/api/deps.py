"""Typed dependencies: routes ask for a service or the caller, never reach into `app.state` themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from galerne.config import is_loopback
from galerne.errors import AuthenticationError, GalerneError, PermissionDeniedError
from galerne.services.accounts import AccountService
from galerne.services.auth import Authenticator, Principal
from galerne.services.chat import ChatService
from galerne.services.completions import CompletionService
from galerne.services.documents import DocumentService
from galerne.services.embeddings import EmbeddingService
from galerne.services.health import HealthCheck
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry
from galerne.services.moderation.audit import ModerationAudit
from galerne.services.moderation.moderations import ModerationService
from galerne.services.usage import UsageReports


@dataclass
class Runtime:
    """Everything built at start-up and shared by requests."""

    registry: ModelRegistry
    chat: ChatService
    completions: CompletionService
    metrics: Metrics
    accounts: AccountService
    usage: UsageReports
    health: HealthCheck
    authenticator: Authenticator | None  # None: the server runs with --no-auth
    moderations: ModerationService
    moderation_audit: ModerationAudit
    embeddings: EmbeddingService
    documents: DocumentService | None = None  # None: no embedding model is served


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def api_key_of(request: Request) -> str | None:
    """The key from `Authorization: Bearer` (OpenAI, Mistral SDKs) or `api-key` (Azure SDKs)."""
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return token.strip() or None
    return request.headers.get("api-key") or None


async def get_principal(request: Request, runtime: RuntimeDep) -> Principal:
    if runtime.authenticator is None:
        return _anonymous_if_local(request)
    return await runtime.authenticator.authenticate(api_key_of(request))


def _anonymous_if_local(request: Request) -> Principal:
    """Without keys (`--no-auth`) only connections made to a loopback address are served: the settings'
    host is checked at start-up, but an app served by other means may listen wider than it says."""
    host, port = request.scope.get("server") or (None, None)
    if port is not None and not is_loopback(str(host)):  # no port: a Unix socket, local by nature
        raise AuthenticationError(
            "this server runs without API keys (--no-auth) and answers loopback connections only"
        )
    return Principal.anonymous()


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_optional_principal(request: Request, runtime: RuntimeDep) -> Principal | None:
    """The caller of an endpoint open to all that shows more to keys: None without a valid key, never a 401."""
    if runtime.authenticator is None:
        return Principal.anonymous()
    token = api_key_of(request)
    if token is None:
        return None
    try:
        return await runtime.authenticator.authenticate(token)
    except GalerneError:  # a bad key, or the database is down: answer as to anyone
        return None


OptionalPrincipalDep = Annotated[Principal | None, Depends(get_optional_principal)]


async def get_admin(principal: PrincipalDep) -> Principal:
    if principal.key_id is None:
        raise PermissionDeniedError(
            "the admin API is closed on a server without keys (--no-auth); "
            "manage projects and keys with the `galerne` CLI"
        )
    if not principal.is_admin:
        raise PermissionDeniedError("this endpoint needs an admin key (`galerne keys create --admin`)")
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]
