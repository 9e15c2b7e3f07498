#!/usr/bin/env python
"""Prefix reuse: time to first token of the 6th turn of a chat, with and without the slot's cached prefix.

Multi-turn chats re-send their whole history every turn. Galerne's engine puts a request in the free
slot whose KV cache shares the longest prefix with the prompt and prefills only the rest. This measures
what that buys, in process, on the bundled model:

* with reuse: turns 1-5 run on one engine (greedy, real replies), then turn 6 is timed;
* without reuse: the identical turn-6 request on a fresh engine that has only served an unrelated prompt.

    python benchmarks/prefix_reuse.py          # also run as stage (e) of bench_serving.py
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from galerne.catalog import default_catalog
from galerne.engines.llamacpp.engine import EmbeddedModelConfig, LlamaCppEngine
from galerne.inference.types import ChatMessage, GenerationRequest, Role, SamplingParams

SYSTEM = "You are a helpful assistant."
TOPICS = ("the tides", "bread baking", "bicycles", "volcanoes", "honey bees", "lighthouses")
REPLY_TOKENS = 200
PARAGRAPH = (
    "I would like a careful, detailed explanation with concrete examples, a little history, the main "
    "misconceptions people have, and a few practical tips I could try at home this weekend. Please keep "
    "the tone friendly and avoid jargon where you can, or explain it when you cannot. "
)


@dataclass
class PrefixReuseResult:
    history_tokens: int
    cached_tokens: int
    ttft_with_reuse_s: float
    ttft_without_reuse_s: float
    same_first_text: bool

    @property
    def speedup(self) -> float:
        return self.ttft_without_reuse_s / self.ttft_with_reuse_s


def _user(turn: int) -> ChatMessage:
    return ChatMessage(Role.USER, f"Tell me about {TOPICS[turn]}. " + PARAGRAPH * 2)


async def _run(engine: LlamaCppEngine, messages: list[ChatMessage], max_tokens: int) -> tuple[str, float, int]:
    """Reply text, time to first text, and cached prompt tokens of one greedy request."""
    request = GenerationRequest(tuple(messages), SamplingParams(temperature=0.0, max_tokens=max_tokens))
    started = time.perf_counter()
    [generation] = engine.submit(await engine.prepare(request))
    first: float | None = None
    parts: list[str] = []
    async for event in generation.events():
        if event.text and first is None:
            first = time.perf_counter() - started
        parts.append(event.text)
    return "".join(parts), first if first is not None else time.perf_counter() - started, generation.cached_tokens


def _engine() -> LlamaCppEngine:
    path = default_catalog().default_entry().gguf_path()
    return LlamaCppEngine(EmbeddedModelConfig(path=path, context_length=4096, num_slots=4))


async def _measure() -> PrefixReuseResult:
    engine = _engine()
    try:
        messages = [ChatMessage(Role.SYSTEM, SYSTEM)]
        for turn in range(5):
            messages.append(_user(turn))
            reply, _, _ = await _run(engine, messages, REPLY_TOKENS)
            messages.append(ChatMessage(Role.ASSISTANT, reply))
        messages.append(_user(5))
        history_tokens = len(engine.tokenize_prompt(GenerationRequest(tuple(messages))))
        with_reuse, ttft_reuse, cached = await _run(engine, messages, 8)
    finally:
        engine.close()
    cold = _engine()
    try:
        await _run(cold, [ChatMessage(Role.USER, "Hi")], 4)
        without_reuse, ttft_cold, _ = await _run(cold, messages, 8)
    finally:
        cold.close()
    return PrefixReuseResult(history_tokens, cached, ttft_reuse, ttft_cold, with_reuse == without_reuse)


def measure_prefix_reuse() -> PrefixReuseResult:
    """Run the measurement (about 15 s on 2 cores)."""
    return asyncio.run(_measure())


def describe(result: PrefixReuseResult) -> str:
    return (
        f"6th turn, {result.history_tokens}-token prompt: TTFT {result.ttft_with_reuse_s * 1000:.0f} ms with reuse "
        f"({result.cached_tokens} tokens cached) vs {result.ttft_without_reuse_s * 1000:.0f} ms without: "
        f"{result.speedup:.1f}x faster; same first tokens: {result.same_first_text}"
    )


if __name__ == "__main__":
    print(describe(measure_prefix_reuse()))
