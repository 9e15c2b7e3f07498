"""The engine end to end on the real model: `n` choices from one prompt, and an engine that stops or breaks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from galerne.catalog import default_catalog
from galerne.engines.llamacpp import engine as engine_module
from galerne.engines.llamacpp.engine import EmbeddedGeneration, EmbeddedModelConfig, LlamaCppEngine
from galerne.engines.llamacpp.scheduler import PREFIX_WORTH_A_COPY
from galerne.errors import EngineUnavailableError
from galerne.inference.types import ChatMessage, FinishReason, GenerationRequest, Role, SamplingParams
from tests.conftest import engine_threads


def _engine(num_slots: int = 4) -> LlamaCppEngine:
    path = default_catalog().default_entry().gguf_path()
    return LlamaCppEngine(
        EmbeddedModelConfig(path=path, context_length=512, num_slots=num_slots, num_threads=engine_threads())
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    started = _engine()
    yield started
    started.close()


def _request(*, num_choices: int = 1, temperature: float = 0.0, seed: int | None = None) -> GenerationRequest:
    story = "Write a short story about a lighthouse keeper and a storm. " * 3
    return GenerationRequest(
        messages=(ChatMessage(Role.USER, story),),
        sampling=SamplingParams(temperature=temperature, max_tokens=24, seed=seed),
        num_choices=num_choices,
    )


async def _texts(generations: list[EmbeddedGeneration]) -> list[str]:
    async def one(generation: EmbeddedGeneration) -> str:
        return "".join([event.text async for event in generation.events()])

    return list(await asyncio.gather(*(one(generation) for generation in generations)))


def test_choices_share_the_prompt_kv_and_match_a_lone_request(engine: LlamaCppEngine) -> None:
    async def run() -> tuple[list[str], list[str], list[int], int]:
        prepared = await engine.prepare(_request(num_choices=3))
        generations = engine.submit(prepared)
        texts = await _texts(generations)
        alone = await _texts(engine.submit(await engine.prepare(_request())))
        return texts, alone, [g.cached_tokens for g in generations], prepared.prompt_tokens

    texts, alone, cached, prompt_tokens = asyncio.run(run())
    assert texts == alone * 3  # greedy: the copied KV gives exactly what a fresh prefill gives
    assert texts[0]
    assert all(count == prompt_tokens - 1 for count in cached[1:])  # only the last prompt token is decoded again


BRIEF = "You answer questions about the lighthouse of Ar-Men, built on a rock off the Île de Sein, Brittany. " * 5


def _asking(question: str, *, max_tokens: int, min_tokens: int = 0) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(Role.SYSTEM, BRIEF), ChatMessage(Role.USER, question)),
        sampling=SamplingParams(temperature=0.0, max_tokens=max_tokens, min_tokens=min_tokens),
    )


def test_a_prefix_a_busy_slot_holds_is_copied_and_answers_as_a_fresh_prefill(engine: LlamaCppEngine) -> None:
    question = _asking("How tall is it?", max_tokens=16)

    async def with_a_busy_holder() -> tuple[str, int, int]:
        [holder] = engine.submit(await engine.prepare(_asking("Tell me its history.", max_tokens=300, min_tokens=300)))
        holder_events = holder.events()
        await anext(holder_events)  # the brief is in the holder's KV, and it keeps decoding for 299 tokens
        prepared = await engine.prepare(question)
        [copied] = engine.submit(prepared)
        text = "".join([event.text async for event in copied.events()])
        assert engine.stats().num_active == 1  # the holder was busy all along
        holder.cancel()
        [_ async for _ in holder_events]
        return text, copied.cached_tokens, prepared.prompt_tokens

    async def alone(fresh: LlamaCppEngine) -> str:
        return (await _texts(list(fresh.submit(await fresh.prepare(question)))))[0]

    text, cached, prompt_tokens = asyncio.run(with_a_busy_holder())
    assert PREFIX_WORTH_A_COPY <= cached < prompt_tokens - 1  # the brief, not the question
    assert cached > prompt_tokens // 2
    fresh = _engine(num_slots=1)
    try:
        assert asyncio.run(alone(fresh)) == text  # greedy: the copied KV gives what a fresh prefill gives
    finally:
        fresh.close()


def test_seeded_choices_differ_and_each_reproduces(engine: LlamaCppEngine) -> None:
    async def run() -> list[str]:
        return await _texts(engine.submit(await engine.prepare(_request(num_choices=2, temperature=1.0, seed=7))))

    first, second = asyncio.run(run()), asyncio.run(run())
    assert first == second
    assert first[0] != first[1]


def test_a_broken_engine_fails_what_it_holds_and_refuses_new_requests() -> None:
    broken = _engine(num_slots=1)

    def crash(*_: object) -> None:
        raise RuntimeError("injected fault in the engine loop")

    broken._scheduler.postprocess = crash  # type: ignore[method-assign]

    async def run() -> list[tuple[FinishReason | None, str | None]]:
        [generation] = broken.submit(await broken.prepare(_request()))
        events = [event async for event in generation.events()]
        return [(event.finish_reason, event.error) for event in events]

    try:
        assert asyncio.run(run()) == [(FinishReason.ERROR, "internal engine error")]
        with pytest.raises(EngineUnavailableError):
            asyncio.run(run())
        assert not broken.stats().num_queued
    finally:
        broken.close()


def test_close_leaves_the_context_alone_while_a_decode_is_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    stuck = _engine(num_slots=1)
    release, entered = threading.Event(), threading.Event()
    decode = stuck._context.decode

    def slow_decode() -> None:
        entered.set()
        release.wait(30)
        decode()

    stuck._context.decode = slow_decode  # type: ignore[method-assign]
    monkeypatch.setattr(engine_module, "STOP_TIMEOUT_SECONDS", 0.2)

    async def start() -> None:
        stuck.submit(await stuck.prepare(_request()))

    asyncio.run(start())
    assert entered.wait(30)
    stuck.close()  # returns after the timeout without freeing what the engine thread is using
    assert stuck._context.handle
    release.set()
    stuck._thread.join(30)
    assert not stuck._thread.is_alive()
    stuck._context.close()
    stuck.model.close()
