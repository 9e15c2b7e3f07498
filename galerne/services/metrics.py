"""Prometheus metrics, one registry per application so that several apps can live in one process."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from galerne.engines.base import EngineStats

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The counters the platform exports at `GET /metrics` (names follow vLLM's and llama.cpp's)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "galerne_requests", "Chat requests by final status.", ["model", "status"], registry=self.registry
        )
        self.refused = Counter(
            "galerne_refused_requests",
            "Requests refused by a project's limits or budget, by error code.",
            ["model", "code"],
            registry=self.registry,
        )
        self.invalid_outputs = Counter(
            "galerne_invalid_outputs",
            "Constrained replies withheld because they broke their schema or grammar (sent as errors).",
            ["model"],
            registry=self.registry,
        )
        self.closed_early = Counter(
            "galerne_closed_early_replies",
            "Constrained replies steered to their shortest valid end because max_tokens was running out.",
            ["model"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "galerne_prompt_tokens", "Prompt tokens processed.", ["model"], registry=self.registry
        )
        self.cached_prompt_tokens = Counter(
            "galerne_cached_prompt_tokens", "Prompt tokens reused from a slot's KV cache.", ["model"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "galerne_completion_tokens", "Tokens generated.", ["model"], registry=self.registry
        )
        self.time_to_first_token = Histogram(
            "galerne_time_to_first_token_seconds",
            "From request accepted to first generated text.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            "galerne_inter_token_latency_seconds",
            "Gap between two streamed pieces of text.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "galerne_request_duration_seconds",
            "From request accepted to last token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "galerne_queue_depth", "Requests waiting for a slot.", ["model"], registry=self.registry
        )
        self._active_slots = Gauge(
            "galerne_active_slots", "Slots generating or prefilling.", ["model"], registry=self.registry
        )
        self._usage_backlog = Gauge(
            "galerne_usage_backlog_bytes",
            "Usage records journalled on disk but not yet in the database; new requests get 503 past "
            "GALERNE_USAGE_JOURNAL_MAX_BYTES.",
            registry=self.registry,
        )
        self.deployment_requests = Counter(
            "galerne_deployment_requests",
            "Requests a deployment of a model ended: ok, failed (its own fault: 5xx, unreachable, timeout), "
            "failed_over (then moved to another deployment).",
            ["model", "deployment", "outcome"],
            registry=self.registry,
        )
        self._deployment_in_flight = Gauge(
            "galerne_deployment_in_flight", "Requests in flight on a deployment.", ["model", "deployment"],
            registry=self.registry,
        )
        self._deployment_healthy = Gauge(
            "galerne_deployment_healthy", "1 while a deployment is in rotation, 0 while it is out after failures.",
            ["model", "deployment"], registry=self.registry,
        )
        self._embedding_passes = Gauge(
            "galerne_embedding_encoder_passes", "Encoder passes an embedding model has run.", ["model"],
            registry=self.registry,
        )
        self._embedding_sequences = Gauge(
            "galerne_embedding_sequences",
            "Inputs those passes held; divided by the passes, how many inputs concurrent requests shared a pass with.",
            ["model"], registry=self.registry,
        )
        self._usage_in_memory = Gauge(
            "galerne_usage_records_in_memory", "Usage records held in memory until written.", registry=self.registry
        )

    def watch_meter(self, backlog_bytes: Callable[[], int], num_in_memory: Callable[[], int]) -> None:
        """Read the usage writer's backlog at scrape time: a growing one means the database is not taking it."""
        self._usage_backlog.set_function(backlog_bytes)
        self._usage_in_memory.set_function(num_in_memory)

    def watch_engine(self, model: str, stats: Callable[[], EngineStats]) -> None:
        """Read queue depth and busy slots from the engine at scrape time, not on the hot path."""
        self._queue_depth.labels(model).set_function(lambda: stats().num_queued)
        self._active_slots.labels(model).set_function(lambda: stats().num_active)

    def watch_embedder(self, model: str, num_passes: Callable[[], int], num_sequences: Callable[[], int]) -> None:
        """Read an embedding engine's pass and input counts at scrape time (its batching, as achieved)."""
        self._embedding_passes.labels(model).set_function(num_passes)
        self._embedding_sequences.labels(model).set_function(num_sequences)

    def watch_deployment(self, model: str, deployment: str, in_flight: Callable[[], int],
                         is_healthy: Callable[[], bool]) -> None:
        self._deployment_in_flight.labels(model, deployment).set_function(in_flight)
        self._deployment_healthy.labels(model, deployment).set_function(lambda: float(is_healthy()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
