#!/usr/bin/env python
"""Does a JSON-schema reply end well? Galerne's embedded engine on a JSONSchemaBench sample.

    python benchmarks/bench_jsonschemabench.py                    # all 100 schemas (20 per split)
    python benchmarks/bench_jsonschemabench.py --per-split 12     # a bounded subset: the first 12 of each split
    python benchmarks/bench_jsonschemabench.py --json after.json

The sample (`data/jsonschemabench_sample.json`, drawn by `draw_jsonschemabench.py` with its provenance)
spans Glaive, GitHub easy/medium/hard and Kubernetes. Each schema is sent the way a client sends it: a
wire `ChatCompletionRequest` with `response_format: json_schema` (the schema quoted in the user turn, cut
at 1,200 characters), through `validate.to_generation_request`
and the engine (in process, no HTTP), temperature 0, `max_tokens` 1024, `concurrency` at a time.

Every request ends in one bucket:

- `valid`: the model finished (`stop`) and the reply validates against the schema;
- `closed`: `length`, but the budget-aware close ended the reply as complete, valid JSON;
- `length`: cut by `max_tokens` mid-structure (the failure this benchmark is about);
- `refused`: a 400 before decoding (the schema cannot be enforced; the message is printed);
- `too_long`: the prompt quoting the schema does not fit the context (not a schema problem);
- `invalid` / `error`: a finished reply that fails its schema, or an engine error (both must stay 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from galerne.catalog import default_catalog
from galerne.engines.llamacpp.engine import EmbeddedModelConfig, LlamaCppEngine
from galerne.errors import ContextLengthExceededError, InvalidRequestError
from galerne.inference.types import FinishReason
from galerne.inference.validate import to_generation_request
from galerne.protocol import chat as wire

SAMPLE = Path(__file__).resolve().parent / "data" / "jsonschemabench_sample.json"
PROMPT = "Generate a JSON object that matches this JSON schema:\n{schema}"
# Prefill dominates on a small CPU: the schema is quoted up to this many characters (its top-level keys
# come first), so that a run of 30 schemas takes minutes, not hours, on a shared 2-core machine.
MAX_QUOTED = 1200
BUCKETS = ("valid", "closed", "length", "refused", "too_long", "invalid", "error")


@dataclass
class Outcome:
    split: str
    path: str
    bucket: str
    completion_tokens: int = 0
    seconds: float = 0.0
    detail: str = ""


def _request(schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    return {
        "model": "bench",
        "messages": [{"role": "user", "content": PROMPT.format(schema=_quoted(schema))}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "schema", "schema": schema}},
        "temperature": 0,
        "max_tokens": max_tokens,
    }


def _quoted(schema: dict[str, Any]) -> str:
    text = json.dumps(schema, separators=(",", ":"))
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + " ... (truncated)"


async def run_one(engine: LlamaCppEngine, entry: dict[str, Any], max_tokens: int) -> Outcome:
    outcome = Outcome(entry["split"], entry["path"], "error")
    started = time.monotonic()
    try:
        body = wire.ChatCompletionRequest.model_validate(_request(entry["schema"], max_tokens))
        request = to_generation_request(body, model_id="bench")
        (generation,) = engine.submit(await engine.prepare(request))  # n = 1: one generation
    except ContextLengthExceededError as exc:
        outcome.bucket, outcome.detail = "too_long", exc.message
        return outcome
    except (InvalidRequestError, ValueError) as exc:  # ValueError: pydantic's 422
        outcome.bucket, outcome.detail = "refused", getattr(exc, "message", str(exc))[:300]
        return outcome
    text: list[str] = []
    async for event in generation.events():
        text.append(event.text)
        outcome.completion_tokens = event.completion_tokens
        if event.finish_reason is not None:
            outcome.bucket = _bucket(event.finish_reason, "".join(text), entry["schema"], event.is_closed_early)
            outcome.detail = event.error or ""
    outcome.seconds = time.monotonic() - started
    return outcome


def _bucket(reason: FinishReason, text: str, schema: dict[str, Any], is_closed_early: bool) -> str:
    if reason is FinishReason.ERROR:
        return "error"
    is_valid = _is_valid(text, schema)
    if reason is FinishReason.LENGTH:
        return "closed" if is_valid and is_closed_early else "length"
    return "valid" if is_valid else "invalid"


def _is_valid(text: str, schema: dict[str, Any]) -> bool:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).is_valid(value)


async def run_all(entries: list[dict[str, Any]], max_tokens: int, concurrency: int) -> list[Outcome]:
    gguf = default_catalog().default_entry().gguf_path()
    engine = LlamaCppEngine(EmbeddedModelConfig(path=gguf, context_length=4096, num_slots=concurrency))
    limit = asyncio.Semaphore(concurrency)

    async def one(entry: dict[str, Any]) -> Outcome:
        async with limit:
            outcome = await run_one(engine, entry, max_tokens)
            print(f"  {outcome.bucket:8} {outcome.completion_tokens:5} tok {outcome.seconds:6.1f} s  {outcome.path}",
                  flush=True)  # fmt: skip
            return outcome

    try:
        return list(await asyncio.gather(*(one(entry) for entry in entries)))
    finally:
        engine.close()


def report(outcomes: list[Outcome], wall_seconds: float) -> dict[str, Any]:
    counts = Counter(outcome.bucket for outcome in outcomes)
    accepted = sum(counts[bucket] for bucket in ("valid", "closed", "length", "invalid", "error"))
    print(f"\n{len(outcomes)} schemas, {accepted} accepted, wall {wall_seconds:.0f} s")
    for bucket in BUCKETS:
        share = counts[bucket] / accepted if accepted and bucket not in ("refused", "too_long") else None
        extra = f"  ({share:.0%} of accepted)" if share is not None else ""
        print(f"  {bucket:9} {counts[bucket]:4}{extra}")
    decoded = [o for o in outcomes if o.bucket in ("valid", "closed", "length")]
    tokens = [o.completion_tokens for o in decoded]
    if tokens:
        print(f"  completion tokens: median {statistics.median(tokens):.0f}, mean {statistics.mean(tokens):.0f}")
    by_split: dict[str, Counter[str]] = {}
    for outcome in outcomes:
        by_split.setdefault(outcome.split, Counter())[outcome.bucket] += 1
    for split, split_counts in by_split.items():
        print(
            f"  {split:14} "
            + " ".join(f"{bucket}={split_counts[bucket]}" for bucket in BUCKETS if split_counts[bucket])
        )
    for outcome in outcomes:
        if outcome.bucket in ("refused", "invalid", "error"):
            print(f"  {outcome.bucket}: {outcome.path}: {outcome.detail[:200]}")
    return {"counts": dict(counts), "accepted": accepted, "wall_seconds": wall_seconds,
            "outcomes": [asdict(outcome) for outcome in outcomes]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-split", type=int, default=None, help="take the first N schemas of each split")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="write every outcome to this file")
    args = parser.parse_args(argv)
    sample = json.loads(SAMPLE.read_text())
    entries: list[dict[str, Any]] = sample["schemas"]
    if args.per_split is not None:
        seen: Counter[str] = Counter()
        entries = [e for e in entries if (seen.update([e["split"]]) or seen[e["split"]]) <= args.per_split]
    print(f"JSONSchemaBench sample @ {sample['commit'][:10]}: {len(entries)} schemas, temperature 0, "
          f"max_tokens {args.max_tokens}, concurrency {args.concurrency}")  # fmt: skip
    started = time.monotonic()
    outcomes = asyncio.run(run_all(entries, args.max_tokens, args.concurrency))
    summary = report(outcomes, time.monotonic() - started)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
