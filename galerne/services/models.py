"""The loaded models: one engine per catalogue entry, and their public cards.

Example::

    registry = ModelRegistry.load(catalog, settings, metrics)
    engine = registry.engine_for(catalog.resolve("smollm2"))
"""

from __future__ import annotations

import os

from galerne.catalog import Capability, Catalog, ModelEntry
from galerne.config import Settings
from galerne.engines.base import Engine
from galerne.engines.llamacpp.engine import EmbeddedModelConfig, LlamaCppEngine
from galerne.engines.remote import RemoteEngine, RemoteModelConfig
from galerne.errors import ConfigurationError
from galerne.protocol.models import ModelCapabilities, ModelCard, ModelList
from galerne.services.metrics import Metrics


class ModelRegistry:
    """Owns every engine; closing the registry frees all model memory."""

    def __init__(self, catalog: Catalog, engines: dict[str, Engine]) -> None:
        self.catalog = catalog
        self._engines = engines

    @classmethod
    def load(cls, catalog: Catalog, settings: Settings, metrics: Metrics) -> ModelRegistry:
        engines: dict[str, Engine] = {}
        try:
            for entry in catalog.models:
                engine = _start_engine(entry, settings)
                engines[entry.id] = engine
                metrics.watch_engine(entry.id, engine.stats)
        except BaseException:
            for engine in engines.values():
                engine.close()
            raise
        return cls(catalog, engines)

    def engine_for(self, entry: ModelEntry) -> Engine:
        return self._engines[entry.id]

    def cards(self) -> ModelList:
        return ModelList(data=[model_card(entry) for entry in self.catalog.ordered()])

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()


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


def _start_engine(entry: ModelEntry, settings: Settings) -> Engine:
    if entry.engine == "remote":
        return RemoteEngine(_remote_config(entry))
    config = EmbeddedModelConfig(
        path=entry.gguf_path(),
        context_length=entry.context_length,
        num_slots=entry.num_slots,
        max_batch_tokens=entry.max_batch_tokens,
        max_queued=settings.max_queued_requests,
        num_threads=settings.num_threads,
        model_id=entry.id,
    )
    return LlamaCppEngine(config)


def _remote_config(entry: ModelEntry) -> RemoteModelConfig:
    """The upstream key comes from the environment variable the catalogue names, read once at start."""
    api_key = None
    if entry.api_key_env:
        api_key = os.environ.get(entry.api_key_env)
        if not api_key:
            raise ConfigurationError(
                f"model {entry.id!r}: environment variable {entry.api_key_env} (its upstream API key) is not set"
            )
    if entry.base_url is None:
        raise ConfigurationError(f"model {entry.id!r}: a remote model needs `base_url`")
    return RemoteModelConfig(
        base_url=entry.base_url,
        upstream_model=entry.upstream_model or entry.id,
        api_key=api_key,
        context_length=entry.context_length,
        max_concurrent_requests=entry.max_concurrent_requests,
        timeout_seconds=entry.timeout_seconds,
        model_id=entry.id,
    )
