"""The loaded models: one engine per catalogue entry, and their public cards.

Example::

    registry = ModelRegistry.load(catalog, settings, metrics)
    engine = registry.engine_for(catalog.resolve("smollm2"))
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Literal

from galerne.catalog import Capability, Catalog, Deployment, ModelEntry
from galerne.config import Settings
from galerne.engines.base import EmbeddingEngine, Engine
from galerne.engines.llamacpp.embedder import EmbedderConfig, LlamaCppEmbedder
from galerne.engines.llamacpp.engine import EmbeddedModelConfig, LlamaCppEngine
from galerne.engines.llamacpp.model import GpuPlacement
from galerne.engines.remote import RemoteEngine, RemoteModelConfig
from galerne.errors import ConfigurationError, UnsupportedFeatureError
from galerne.protocol.models import ModelCapabilities, ModelCard, ModelHealth, ModelList
from galerne.services.metrics import Metrics
from galerne.services.routing import Router, RouterPolicy
from galerne.services.shared_health import SharedHealth


class ModelRegistry:
    """Owns every engine; closing the registry frees all model memory."""

    def __init__(self, catalog: Catalog, engines: dict[str, Engine], shared: SharedHealth | None = None) -> None:
        self.catalog = catalog
        self._engines = engines
        self._shared = shared
        self._closing: asyncio.Task[None] | None = None

    @classmethod
    def load(cls, catalog: Catalog, settings: Settings, metrics: Metrics) -> ModelRegistry:
        """Start every engine. With `GALERNE_REDIS_URL` the replicas share deployment health (needs the
        serving loop: the lifespan calls this)."""
        engines: dict[str, Engine] = {}
        shared = SharedHealth(settings.redis_url) if settings.redis_url and _has_router(catalog) else None
        try:
            for entry in catalog.models:
                engine = _start_engine(entry, settings, metrics, shared)
                engines[entry.id] = engine
                metrics.watch_engine(entry.id, engine.stats)
                if isinstance(engine, LlamaCppEmbedder):
                    _watch_embedder(metrics, entry.id, engine)
        except BaseException:
            for engine in engines.values():
                engine.close()
            raise
        return cls(catalog, engines, shared)

    def engine_for(self, entry: ModelEntry) -> Engine:
        return self._engines[entry.id]

    def embedder_for(self, entry: ModelEntry) -> EmbeddingEngine:
        """The engine that embeds for `entry`; a model that does not offer embeddings is a 400 saying so."""
        if Capability.EMBEDDINGS not in entry.capabilities:
            raise UnsupportedFeatureError(
                f"model {entry.id!r} does not offer embeddings; use an embedding model (GET /v1/models shows "
                "`embeddings: true`), such as all-minilm-l6-v2",
                param="model",
            )
        engine = self._engines[entry.id]
        if not isinstance(engine, EmbeddingEngine):
            raise UnsupportedFeatureError(f"model {entry.id!r} declares embeddings but its engine cannot embed")
        return engine

    def cards(self) -> ModelList:
        return ModelList(data=[self.card(entry) for entry in self.catalog.ordered()])

    def card(self, entry: ModelEntry) -> ModelCard:
        """The entry's card; `completion_fim` is also set when the engine found FIM tokens in the vocabulary,
        and `health` says how many of its deployments are in rotation now."""
        card = model_card(entry)
        engine = self._engines[entry.id]
        if engine.capabilities.supports_fim:
            card.capabilities.completion_fim = True
        num_healthy, num_deployments = engine.health() if isinstance(engine, Router) else (
            int(engine.stats().is_healthy), 1
        )
        status: Literal["healthy", "degraded", "down"] = (
            "healthy" if num_healthy == num_deployments else "degraded" if num_healthy else "down"
        )
        card.health = ModelHealth(status=status, num_deployments=num_deployments, num_healthy=num_healthy)
        return card

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        shared, self._shared = self._shared, None
        if shared is not None:
            with contextlib.suppress(RuntimeError):  # no loop: the process is ending, and its sockets with it
                self._closing = asyncio.get_running_loop().create_task(shared.aclose())


def model_card(entry: ModelEntry) -> ModelCard:
    """la Plateforme's model card for a catalogue entry."""
    capabilities = set(entry.capabilities)
    return ModelCard(
        id=entry.id,
        created=entry.created,
        owned_by=entry.owned_by,
        capabilities=ModelCapabilities(
            completion_chat=Capability.CHAT in capabilities,
            completion_fim=Capability.FIM in capabilities,
            function_calling=Capability.TOOLS in capabilities,
            json_output=Capability.JSON in capabilities,
            embeddings=Capability.EMBEDDINGS in capabilities,
        ),
        name=entry.id,
        description=entry.description,
        max_context_length=entry.context_length,
        aliases=list(entry.aliases),
        default_model_temperature=entry.default_temperature,
        languages=list(entry.languages),
        pricing={
            "input_per_million": entry.price_input_per_million,
            "output_per_million": entry.price_output_per_million,
        },
    )


def _watch_embedder(metrics: Metrics, model_id: str, embedder: LlamaCppEmbedder) -> None:
    metrics.watch_embedder(model_id, lambda: embedder.num_encodes, lambda: embedder.num_encoded)


def _has_router(catalog: Catalog) -> bool:
    return any(_is_routed(entry) for entry in catalog.models)


def _is_routed(entry: ModelEntry) -> bool:
    deployments = entry.all_deployments()
    return len(deployments) > 1 or deployments[0].engine != "embedded"


def _start_engine(entry: ModelEntry, settings: Settings, metrics: Metrics, shared: SharedHealth | None) -> Engine:
    """The model's one engine, or a `Router` over its deployments when it has several or a remote one
    (a remote upstream can fail: its requests get retries, failover and a circuit breaker)."""
    deployments = entry.all_deployments()
    if not _is_routed(entry):
        return _deployment_engine(entry, deployments[0], settings)
    engines: list[tuple[Deployment, Engine]] = []
    try:
        for deployment in deployments:
            engines.append((deployment, _deployment_engine(entry, deployment, settings)))
    except BaseException:
        for _, engine in engines:
            engine.close()
        raise
    policy = RouterPolicy(max_failures=entry.max_failures, health_check_seconds=entry.health_check_seconds)
    return Router(entry.id, engines, policy, metrics, context_length=entry.context_length, shared=shared)


def _deployment_engine(entry: ModelEntry, deployment: Deployment, settings: Settings) -> Engine:
    if deployment.engine != "embedded":
        return RemoteEngine(_remote_config(entry, deployment))
    gpu = GpuPlacement(
        gpu_layers=deployment.gpu_layers,
        split_mode=deployment.split_mode,
        main_gpu=deployment.main_gpu,
        tensor_split=deployment.tensor_split,
    )
    if Capability.EMBEDDINGS in entry.capabilities:
        return LlamaCppEmbedder(
            EmbedderConfig(
                path=deployment.gguf_file(entry.id),
                model_id=entry.id,
                max_sequences=deployment.num_slots,
                max_batch_tokens=deployment.max_batch_tokens,
                # Inputs, not requests: a request may hold many (up to 512 per call).
                max_queued=settings.max_queued_requests * deployment.num_slots,
                num_threads=settings.num_threads,
                gpu=gpu,
            )
        )
    config = EmbeddedModelConfig(
        path=deployment.gguf_file(entry.id),
        context_length=entry.context_length,
        num_slots=deployment.num_slots,
        max_batch_tokens=deployment.max_batch_tokens,
        max_queued=settings.max_queued_requests,
        num_threads=settings.num_threads,
        model_id=entry.id,
        chat_template=entry.chat_template_source(),
        stop=entry.stop,
        gpu=gpu,
    )
    return LlamaCppEngine(config)


def _remote_config(entry: ModelEntry, deployment: Deployment) -> RemoteModelConfig:
    """The upstream key comes from the environment variable or the file the catalogue names, read once at start;
    the address comes from the catalogue only (a client can never choose where its request goes)."""
    if deployment.base_url is None:
        raise ConfigurationError(f"model {entry.id!r}: a remote model needs `base_url`")
    capabilities = set(entry.capabilities)
    return RemoteModelConfig(
        base_url=deployment.base_url,
        upstream_model=deployment.upstream_model or entry.id,
        api_key=_upstream_key(entry.id, deployment),
        context_length=entry.context_length,
        max_concurrent_requests=deployment.max_in_flight,
        timeout_seconds=deployment.timeout_seconds,
        model_id=entry.id,
        connect_timeout_seconds=deployment.connect_timeout_seconds,
        first_byte_timeout_seconds=deployment.first_byte_timeout_seconds,
        max_retries=deployment.max_retries,
        dialect=deployment.dialect,
        supports_tools=Capability.TOOLS in capabilities,
        supports_json=Capability.JSON in capabilities,
        supports_embeddings=Capability.EMBEDDINGS in capabilities,
    )


def _upstream_key(model_id: str, deployment: Deployment) -> str | None:
    if deployment.api_key_env:
        api_key = os.environ.get(deployment.api_key_env)
        if not api_key:
            raise ConfigurationError(
                f"model {model_id!r}: environment variable {deployment.api_key_env} (its upstream API key) is not set"
            )
        return api_key
    if deployment.api_key_file:
        path = Path(deployment.api_key_file).expanduser()
        try:
            api_key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"model {model_id!r}: its upstream key file {path} cannot be read ({exc.strerror})"
            ) from exc
        if not api_key:
            raise ConfigurationError(f"model {model_id!r}: its upstream key file {path} is empty")
        return api_key
    return None
