"""How far the engine's log-likelihood scores are from a direct llama.cpp computation, and why.

Scores 8 multiple-choice items (4 continuations each) through the embedded engine — alone, then all at
once beside a chat generation (batched with other sequences, context KV copied between slots) — and
compares every continuation's summed log-probability with direct computations of one sequence with
every row's logits, on contexts of their own:

- `same settings`: the engine's context settings (flash attention on, one KV stream per slot, n_ubatch 256);
- `llama.cpp defaults`: n_seq_max 1, unified KV, n_batch 2048 / n_ubatch 512, flash attention auto;
- `flash attention off`: the engine's settings but without flash attention;
- `defaults, FA off`: llama.cpp's defaults (one sequence, unified KV) without flash attention.

Prints the largest absolute difference per comparison, over continuation sums and over single tokens (and
the median over tokens), and the scoring throughput. About a minute on 2 cores.

    .venv/bin/python benchmarks/bench_scoring_exactness.py
"""

from __future__ import annotations

import asyncio
import time

import llama_cpp as ll
import numpy as np

from galerne.catalog import default_catalog
from galerne.engines.llamacpp.engine import EmbeddedModelConfig, LlamaCppEngine
from galerne.engines.llamacpp.logprobs import log_softmax
from galerne.inference.types import (
    ChatMessage,
    GenerationRequest,
    LogprobOptions,
    Role,
    SamplingParams,
    TextPrompt,
)

CONTEXT_LENGTH, NUM_SLOTS, BATCH, THREADS = 1024, 4, 256, 2
QUESTIONS = [
    ("Question: What is the capital of France?\nAnswer:", [" Paris", " Rome", " Berlin", " Madrid"]),
    ("Question: How many legs does a spider have?\nAnswer:", [" eight", " six", " four", " ten"]),
    ("The sun rises in the", [" east", " west", " north", " south"]),
    ("Water boils at a temperature of", [" 100 degrees Celsius", " 50 degrees", " 0 degrees", " 300 K"]),
    ("Question: Which planet is known as the red planet?\nAnswer:", [" Mars", " Venus", " Jupiter", " Saturn"]),
    ("A triangle has", [" three sides", " four sides", " five sides", " two sides"]),
    ("Le chat est assis sur le", [" tapis", " toit", " chien", " nuage"]),
    ("Question: What do bees make?\nAnswer:" * 6, [" honey", " milk", " silk", " wax and honey"]),
]


class Direct:
    def __init__(self, model: object, *, engine_like: bool, flash: bool = True) -> None:
        handle = model.handle  # type: ignore[attr-defined]
        self.num_vocab = model.num_vocab  # type: ignore[attr-defined]
        params = ll.llama_context_default_params()
        params.n_threads = params.n_threads_batch = THREADS
        params.n_ctx = CONTEXT_LENGTH * NUM_SLOTS if engine_like else CONTEXT_LENGTH
        if engine_like:
            params.n_batch = params.n_ubatch = BATCH
            params.n_seq_max = NUM_SLOTS
            params.kv_unified = False
        params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.n_batch = params.n_batch
        self.context = ll.llama_init_from_model(handle, params)
        self.batch = ll.llama_batch_init(self.n_batch, 0, 1)

    def token_logprobs(self, tokens: list[int]) -> list[float]:
        ll.llama_memory_clear(ll.llama_get_memory(self.context), True)
        rows = []
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            for offset, token in enumerate(chunk):
                self.batch.token[offset], self.batch.pos[offset] = token, start + offset
                self.batch.n_seq_id[offset], self.batch.logits[offset] = 1, 1
                self.batch.seq_id[offset][0] = 0
            self.batch.n_tokens = len(chunk)
            assert ll.llama_decode(self.context, self.batch) == 0
            for offset in range(len(chunk)):
                pointer = ll.llama_get_logits_ith(self.context, offset)
                rows.append(log_softmax(np.ctypeslib.as_array(pointer, shape=(self.num_vocab,))))
        return [float(row[token]) for row, token in zip(rows, tokens[1:], strict=False)]

    def close(self) -> None:
        ll.llama_batch_free(self.batch)
        ll.llama_free(self.context)


def _request(context: str, continuations: list[str]) -> GenerationRequest:
    return GenerationRequest(
        messages=(),
        sampling=SamplingParams(temperature=0.0, max_tokens=0),
        num_choices=len(continuations),
        prompt=TextPrompt(context, tuple(continuations)),
        logprobs=LogprobOptions(of_completion=False, of_prompt=True),
    )


async def _score(engine: LlamaCppEngine, context: str, continuations: list[str]) -> list[tuple[list[int], list[float]]]:
    """(prompt tokens, log-probabilities of the scored tokens) per continuation."""
    prepared = await engine.prepare(_request(context, continuations))
    results = []
    for index, generation in enumerate(engine.submit(prepared)):
        entries: tuple = ()
        async for event in generation.events():
            if event.prompt_logprobs is not None:
                entries = event.prompt_logprobs
        scored = [entry.logprob for entry in entries if entry.logprob is not None]
        results.append((prepared.prompt_of(index), scored))
    return results


async def _chat(engine: LlamaCppEngine) -> None:
    request = GenerationRequest(
        messages=(ChatMessage(Role.USER, "Tell me a long story about the sea."),),
        sampling=SamplingParams(temperature=0.0, max_tokens=64),
    )
    [generation] = engine.submit(await engine.prepare(request))
    async for _ in generation.events():
        pass


def main() -> None:
    path = default_catalog().default_entry().gguf_path()
    engine = LlamaCppEngine(
        EmbeddedModelConfig(path=path, context_length=CONTEXT_LENGTH, num_slots=NUM_SLOTS, num_threads=THREADS)
    )
    try:
        started = time.perf_counter()
        alone = [asyncio.run(_score(engine, context, answers)) for context, answers in QUESTIONS]
        alone_seconds = time.perf_counter() - started

        async def together() -> list[list[tuple[list[int], list[float]]]]:
            results = await asyncio.gather(_chat(engine), *(_score(engine, c, a) for c, a in QUESTIONS))
            return list(results[1:])  # type: ignore[arg-type]

        started = time.perf_counter()
        batched = asyncio.run(together())
        batched_seconds = time.perf_counter() - started
        print(f"engine: {len(QUESTIONS)} items x 4 continuations: {len(QUESTIONS) / alone_seconds:.1f} items/s "
              f"one at a time, {len(QUESTIONS) / batched_seconds:.1f} items/s all at once beside a chat reply")
        print(f"{'comparison':46} {'max |sum diff|':>15} {'max |token diff|':>17} {'median token diff':>18}")
        _report("engine alone vs engine batched", alone, batched)
        for name, kwargs in (
            ("engine alone vs direct, same settings", {"engine_like": True}),
            ("engine batched vs direct, same settings", {"engine_like": True}),
            ("engine alone vs direct, llama.cpp defaults", {"engine_like": False}),
            ("engine alone vs direct, flash attention off", {"engine_like": True, "flash": False}),
            ("engine alone vs direct, defaults, FA off", {"engine_like": False, "flash": False}),
        ):
            direct = Direct(engine.model, **kwargs)
            try:
                reference = [[(tokens, _tail(direct.token_logprobs(tokens), len(scored))) for tokens, scored in item]
                             for item in alone]
            finally:
                direct.close()
            _report(name, batched if "batched" in name else alone, reference)
    finally:
        engine.close()


def _tail(values: list[float], count: int) -> list[float]:
    return values[len(values) - count :]


def _report(name: str, left: list, right: list) -> None:
    sums, tokens = 0.0, []
    for item_left, item_right in zip(left, right, strict=True):
        for (_, a), (_, b) in zip(item_left, item_right, strict=True):
            assert len(a) == len(b)
            sums = max(sums, abs(sum(a) - sum(b)))
            tokens += [abs(x - y) for x, y in zip(a, b, strict=True)]
    print(f"{name:46} {sums:15.2e} {max(tokens):17.2e} {float(np.median(tokens)):18.2e}")


if __name__ == "__main__":
    main()
