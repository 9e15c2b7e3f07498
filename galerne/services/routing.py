"""Routing a model's requests over its deployments: least in flight for its weight, failover, health.

A `Router` is an engine to the services, over one or more deployments (embedded, remote, vllm). Each
request goes to the healthy deployment with the fewest requests in flight per unit of `weight` that still
has room under its `max_in_flight`. When a deployment fails a request before anything reached the client (a
connection refused, a 5xx, a timeout: `UpstreamError`), the request moves to the next deployment; a 4xx is
the client's answer and is never tried elsewhere, and nothing is retried once its first event went out.
After `max_failures` failures in a row a deployment is out of rotation (its circuit is open) until its own
health check (`Engine.probe`, every `health_check_seconds`) answers again. With every deployment out, the
model answers 503 at once rather than letting each request wait on a dead upstream.

Health lives in each replica's memory, and with Redis (`SharedHealth`) a deployment one replica takes out
is taken out by the others within `health_check_seconds`; each replica still probes on its own, so none
depends on another to bring a deployment back.

Example::

    router = Router("mistral-small", [(deployment, engine), ...], RouterPolicy(), metrics)
    [generation] = router.submit(await router.prepare(request))
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

from galerne.catalog import Deployment
from galerne.engines.base import (
    EmbeddingEngine,
    Embeddings,
    Engine,
    EngineCapabilities,
    EngineStats,
    Generation,
    PreparedEmbedding,
    PreparedRequest,
)
from galerne.errors import (
    EngineOverloadedError,
    EngineUnavailableError,
    GalerneError,
    UnsupportedFeatureError,
    UpstreamError,
)
from galerne.inference.types import FinishReason, GenerationEvent, GenerationRequest
from galerne.services.metrics import Metrics
from galerne.services.shared_health import SharedHealth

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RouterPolicy:
    max_failures: int = 3
    health_check_seconds: float = 5.0


class DeploymentState:
    """One deployment as the router sees it: its engine, load and health."""

    def __init__(self, model_id: str, deployment: Deployment, engine: Engine, metrics: Metrics) -> None:
        self.model_id = model_id
        self.name = deployment.name
        self.weight = deployment.weight
        self.max_in_flight = deployment.max_in_flight
        self.engine = engine
        self.num_in_flight = 0
        self.num_failures = 0  # in a row
        self.is_healthy = True
        self._outcomes = metrics.deployment_requests
        metrics.watch_deployment(model_id, self.name, lambda: self.num_in_flight, lambda: self.is_healthy)

    @property
    def load(self) -> float:
        return self.num_in_flight / self.weight

    @property
    def has_room(self) -> bool:
        return self.is_healthy and self.num_in_flight < self.max_in_flight

    def count(self, outcome: str) -> None:
        self._outcomes.labels(self.model_id, self.name, outcome).inc()


class Router:
    """An `Engine` over a model's deployments; see the module docstring."""

    def __init__(
        self,
        model_id: str,
        deployments: Sequence[tuple[Deployment, Engine]],
        policy: RouterPolicy,
        metrics: Metrics,
        *,
        context_length: int,
        shared: SharedHealth | None = None,
    ) -> None:
        if not deployments:
            raise ValueError("a router needs at least one deployment")
        self.model_id = model_id
        self.context_length = context_length
        self._policy = policy
        self._deployments = [DeploymentState(model_id, d, engine, metrics) for d, engine in deployments]
        self.capabilities = _common_capabilities([state.engine.capabilities for state in self._deployments])
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._turn = -1
        self._shared = shared
        self._writes: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None
        if shared is not None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_shared(shared))

    async def prepare(self, request: GenerationRequest) -> RoutedRequest:
        """Prepare on the deployment that will run the request: the least loaded healthy one with room."""
        state = self.pick(())
        return RoutedRequest(request, state, await state.engine.prepare(request))

    def submit(self, prepared: PreparedRequest) -> list[RoutedGeneration]:
        if not isinstance(prepared, RoutedRequest):
            raise TypeError("submit() takes what this engine's prepare() returned")
        state = prepared.deployment
        if not state.has_room:  # it filled up or went out while the request was being prepared
            state = self.pick(())
            if state is not prepared.deployment:
                return self._submit_elsewhere(prepared.request, state)
        generations = state.engine.submit(prepared.prepared)
        return [RoutedGeneration(self, prepared.request, i, state, g) for i, g in enumerate(generations)]

    def _submit_elsewhere(self, request: GenerationRequest, state: DeploymentState) -> list[RoutedGeneration]:
        """The request was prepared for another engine: each choice is prepared again when it starts."""
        return [RoutedGeneration(self, request, i, state, None) for i in range(request.num_choices)]

    def pick(self, tried: Sequence[DeploymentState]) -> DeploymentState:
        """The healthy deployment with room and the least in flight per weight (ties taken in turn)."""
        candidates = [state for state in self._deployments if state.has_room and state not in tried]
        if candidates:
            least = min(state.load for state in candidates)
            ties = [state for state in candidates if state.load == least]
            self._turn += 1  # ties in turn: a burst that arrives before any is submitted still spreads
            return ties[self._turn % len(ties)]
        if any(state.is_healthy for state in self._deployments):
            raise EngineOverloadedError(
                f"model {self.model_id!r}: every deployment has its most requests in flight; retry shortly"
            )
        retry = max(1, math.ceil(self._policy.health_check_seconds))
        raise EngineUnavailableError(
            f"model {self.model_id!r} is unavailable: every deployment of it is failing; retry in {retry} s",
            retry_after=retry,
        )

    def failed(self, state: DeploymentState, event: GenerationEvent) -> None:
        self._failed(state, str(event.error))

    def _failed(self, state: DeploymentState, why: str) -> None:
        state.num_failures += 1
        state.count("failed")
        if state.is_healthy and state.num_failures >= self._policy.max_failures:
            self._take_out(state, f"after {state.num_failures} failures in a row (last: {why})")
            self._share_out(state)

    @property
    def dimensions(self) -> int | None:
        """The deployments' vector size when they agree on one (None: their upstreams decide)."""
        sizes = {getattr(state.engine, "dimensions", None) for state in self._deployments}
        return sizes.pop() if len(sizes) == 1 else None

    @property
    def max_input_tokens(self) -> int:
        return min(getattr(state.engine, "max_input_tokens", self.context_length) for state in self._deployments)

    async def prepare_embedding(
        self, texts: Sequence[str], *, truncate: bool, dimensions: int | None = None
    ) -> RoutedEmbedding:
        """Prepare on the deployment that will embed: the least loaded healthy one with room."""
        state = self.pick(())
        prepared = await _embedder_of(state).prepare_embedding(texts, truncate=truncate, dimensions=dimensions)
        return RoutedEmbedding(tuple(texts), truncate, dimensions, state, prepared)

    async def embed(self, prepared: object) -> Embeddings:
        """Embed on the chosen deployment; when it fails on its own account (502/504), on the next one."""
        if not isinstance(prepared, RoutedEmbedding):
            raise TypeError("embed() takes what this engine's prepare_embedding() returned")
        state, inner = prepared.deployment, prepared.prepared
        tried: list[DeploymentState] = []
        while True:
            failure: UpstreamError | None = None
            state.num_in_flight += 1
            try:
                result = await _embedder_of(state).embed(inner)
            except UpstreamError as exc:
                failure = exc
            finally:
                state.num_in_flight -= 1
            if failure is None:
                self.succeeded(state)
                return result
            self._failed(state, failure.message)
            tried.append(state)
            try:
                following = self.pick(tried)
            except GalerneError:
                raise failure from None
            logger.info("model %r: deployment %r failed to embed (%s); trying %r", self.model_id, state.name,
                        failure.message, following.name)
            state.count("failed_over")
            state = following
            inner = await _embedder_of(state).prepare_embedding(
                prepared.texts, truncate=prepared.truncate, dimensions=prepared.dimensions
            )

    def _take_out(self, state: DeploymentState, why: str) -> None:
        state.is_healthy = False
        logger.warning(
            "model %r: deployment %r is out of rotation %s; checking it every %g s",
            self.model_id, state.name, why, self._policy.health_check_seconds,
        )
        self._probes[state.name] = asyncio.get_running_loop().create_task(self._probe_until_up(state))

    def _share_out(self, state: DeploymentState) -> None:
        """Tell the other replicas (for three health-check periods; the prober renews it while it is down)."""
        if self._shared is not None:
            ttl = 3 * self._policy.health_check_seconds + 1
            self._write(self._shared.mark_out(f"{self.model_id}/{state.name}", ttl_seconds=ttl))

    def _write(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._writes.add(task)  # held until done: the loop keeps tasks only weakly
        task.add_done_callback(self._writes.discard)

    async def _watch_shared(self, shared: SharedHealth) -> None:
        by_key = {f"{self.model_id}/{state.name}": state for state in self._deployments}
        while True:
            await asyncio.sleep(self._policy.health_check_seconds)
            for key in await shared.out_of(list(by_key)):
                state = by_key[key]
                if state.is_healthy:
                    self._take_out(state, "because another replica found it failing")

    def succeeded(self, state: DeploymentState) -> None:
        state.num_failures = 0
        state.count("ok")

    async def _probe_until_up(self, state: DeploymentState) -> None:
        while True:
            await asyncio.sleep(self._policy.health_check_seconds)
            started = time.monotonic()
            if await state.engine.probe():
                break
            self._share_out(state)
            logger.info("model %r: deployment %r still down (checked in %.2f s)", self.model_id, state.name,
                        time.monotonic() - started)
        state.num_failures = 0
        state.is_healthy = True
        self._probes.pop(state.name, None)
        if self._shared is not None:
            await self._shared.mark_up(f"{self.model_id}/{state.name}")
        logger.warning("model %r: deployment %r answers again; back in rotation", self.model_id, state.name)

    def health(self) -> tuple[int, int]:
        """(healthy deployments, all deployments)."""
        return sum(state.is_healthy for state in self._deployments), len(self._deployments)

    def stats(self) -> EngineStats:
        all_stats = [state.engine.stats() for state in self._deployments]
        return EngineStats(
            num_queued=sum(s.num_queued for s in all_stats),
            num_active=sum(s.num_active for s in all_stats),
            num_slots=sum(s.num_slots for s in all_stats),
            # This replica's own engines: an upstream out of rotation shows in /v1/models and /metrics, not in
            # /health, or a load balancer would drop every replica for one dead upstream they all share.
            is_healthy=any(s.is_healthy for s in all_stats),
        )

    async def probe(self) -> bool:
        return any(await asyncio.gather(*(state.engine.probe() for state in self._deployments)))

    def close(self) -> None:
        for task in [*self._probes.values(), *([self._watch] if self._watch else [])]:
            task.cancel()
        self._probes.clear()
        for state in self._deployments:
            state.engine.close()


@dataclass(frozen=True, slots=True)
class RoutedRequest:
    request: GenerationRequest
    deployment: DeploymentState
    prepared: PreparedRequest

    @property
    def prompt_tokens(self) -> int:
        return self.prepared.prompt_tokens

    @property
    def max_new_tokens(self) -> int:
        return self.prepared.max_new_tokens

    @property
    def num_choices(self) -> int:
        return self.prepared.num_choices


@dataclass(frozen=True, slots=True)
class RoutedEmbedding:
    """Texts prepared on one deployment, kept whole to be prepared again on another after a failure."""

    texts: tuple[str, ...]
    truncate: bool
    dimensions: int | None
    deployment: DeploymentState
    prepared: PreparedEmbedding

    @property
    def num_tokens(self) -> int:
        return self.prepared.num_tokens


def _embedder_of(state: DeploymentState) -> EmbeddingEngine:
    if not isinstance(state.engine, EmbeddingEngine):
        raise UnsupportedFeatureError(f"deployment {state.name!r} of this model cannot embed", param="model")
    return state.engine


class RoutedGeneration:
    """One choice on one deployment, moved to another if that one fails before its first event."""

    def __init__(
        self,
        router: Router,
        request: GenerationRequest,
        index: int,
        state: DeploymentState,
        generation: Generation | None,
    ) -> None:
        self._router = router
        self._request = request
        self._index = index
        self._state = state
        self._generation = generation
        self._is_cancelled = False
        self._is_started = False
        self._is_counted = True
        state.num_in_flight += 1

    @property
    def prompt_tokens(self) -> int:
        return self._generation.prompt_tokens if self._generation is not None else 0

    @prompt_tokens.setter
    def prompt_tokens(self, value: int) -> None:
        if self._generation is not None:
            self._generation.prompt_tokens = value

    @property
    def cached_tokens(self) -> int:
        return self._generation.cached_tokens if self._generation is not None else 0

    def cancel(self) -> None:
        self._is_cancelled = True
        if self._generation is not None:
            self._generation.cancel()
        if not self._is_started:  # never read (a choice cancelled before its task ran): its place is free now
            self._release()

    async def events(self) -> AsyncIterator[GenerationEvent]:
        self._is_started = True
        tried: list[DeploymentState] = []
        try:
            while True:
                generation = self._generation or await self._start_here()
                if generation is None:
                    return
                events = generation.events()
                try:
                    first = await anext(events, None)
                    if first is not None and _is_retryable(first):
                        self._router.failed(self._state, first)
                        tried.append(self._state)
                        if await self._move(tried, first):
                            continue
                    if first is not None and first.finish_reason is not FinishReason.ERROR:
                        self._router.succeeded(self._state)
                    if first is not None:
                        yield first
                    async for event in events:
                        if _is_retryable(event):
                            self._router.failed(self._state, event)
                        yield event
                    return
                finally:
                    if isinstance(events, AsyncGenerator):
                        await events.aclose()
        finally:
            self._release()

    async def _start_here(self) -> Generation | None:
        """Prepare and submit this choice alone on the current deployment."""
        request = replace(
            self._request, num_choices=1, sampling=self._request.sampling.for_choice(self._index)
        )
        [generation] = self._state.engine.submit(await self._state.engine.prepare(request))
        self._generation = generation
        return None if self._is_cancelled else generation

    async def _move(self, tried: list[DeploymentState], failure: GenerationEvent) -> bool:
        """Move to the next deployment; False (the failure stands) when none is left or it refuses at once."""
        if self._is_cancelled:
            return False
        try:
            state = self._router.pick(tried)
        except GalerneError:
            return False
        logger.info("model %r: deployment %r failed before its first event (%s); trying %r",
                    self._router.model_id, self._state.name, failure.error, state.name)
        self._state.count("failed_over")
        self._release()
        self._state, self._generation, self._is_counted = state, None, True
        state.num_in_flight += 1
        try:
            await self._start_here()
        except GalerneError as exc:
            logger.warning("model %r: deployment %r refused the failed-over request: %s", self._router.model_id,
                           state.name, exc.message)
            return False
        return True

    def _release(self) -> None:
        if self._is_counted:
            self._is_counted = False
            self._state.num_in_flight -= 1


def _is_retryable(event: GenerationEvent) -> bool:
    """A deployment's own failure (502/504: unreachable, 5xx, silent, a broken answer), not the client's 4xx."""
    return event.finish_reason is FinishReason.ERROR and isinstance(event.failure, UpstreamError)


def _common_capabilities(all_capabilities: list[EngineCapabilities]) -> EngineCapabilities:
    """What every deployment offers: a request must not depend on which one it lands on."""
    return EngineCapabilities(
        supports_chat=all(c.supports_chat for c in all_capabilities),
        supports_tools=all(c.supports_tools for c in all_capabilities),
        supports_json=all(c.supports_json for c in all_capabilities),
        supports_logprobs=all(c.supports_logprobs for c in all_capabilities),
        supports_text_completion=all(c.supports_text_completion for c in all_capabilities),
        supports_fim=all(c.supports_fim for c in all_capabilities),
        supports_embeddings=all(c.supports_embeddings for c in all_capabilities),
    )

