"""`LlamaCppEngine.stats().is_healthy`, which `/health` reports: true while its loop runs, false once it died
(a fault injected into the real scheduler) or stopped."""

from __future__ import annotations

import asyncio

import pytest

from galerne.catalog import default_catalog
from galerne.engines.llamacpp.engine import EmbeddedModelConfig, LlamaCppEngine
from galerne.engines.llamacpp.scheduler import Scheduler
from galerne.inference.types import ChatMessage, FinishReason, GenerationRequest, Role, SamplingParams


def start_engine() -> LlamaCppEngine:
    path = default_catalog().default_entry().gguf_path()
    return LlamaCppEngine(EmbeddedModelConfig(path=path, context_length=128, num_slots=1, num_threads=1))


def test_a_running_engine_is_healthy_and_a_closed_one_is_not() -> None:
    engine = start_engine()
    assert engine.stats().is_healthy
    engine.close()
    assert not engine.stats().is_healthy


async def test_an_engine_whose_loop_crashed_is_not_healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = start_engine()
    try:
        def crash(self: Scheduler, *args: object) -> None:
            raise RuntimeError("injected fault")

        monkeypatch.setattr(Scheduler, "admit", crash)
        request = GenerationRequest(messages=(ChatMessage(Role.USER, "Hi"),), sampling=SamplingParams(max_tokens=4))
        [generation] = engine.submit(await engine.prepare(request))
        events = [event async for event in generation.events()]
        assert events[-1].finish_reason == FinishReason.ERROR
        for _ in range(100):
            if not engine.stats().is_healthy:
                break
            await asyncio.sleep(0.01)
        assert not engine.stats().is_healthy
    finally:
        monkeypatch.undo()
        engine.close()
