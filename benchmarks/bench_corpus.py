#!/usr/bin/env python
"""The 188-schema corpus (tests/structured/schemas.json) on either built-in model: valid, refused, invalid.

    python benchmarks/bench_corpus.py --model gemma3-270m                 # all 188 schemas, T=0
    python benchmarks/bench_corpus.py --model smollm2 --temperature 0.8
    python benchmarks/bench_corpus.py --model gemma3-270m --limit 24 --json gemma.json

Each entry is sent as the corpus test sends it over HTTP (its prompt as the user turn, `response_format`
json_schema, `random_seed` 7, `max_tokens` 1500), through `validate.to_generation_request` and the
engine in process (no HTTP), with the catalogue entry's own template and stops. Buckets:

- `valid`: finished (`stop`, or `length` closed early as complete JSON) and validates against its schema;
- `open_length`: one of the corpus's four open-ended objects cut by `max_tokens` (allowed, as in the test);
- `length`: cut mid-structure; `refused`: a 400 before decoding (the schema cannot be enforced);
- `invalid` / `error`: a finished reply that fails its schema, or an engine error (both must stay 0).

The test suite runs the whole corpus on SmolLM2 and only a small share on Gemma
(tests/api/test_gemma.py); this command is how the full figure on Gemma is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from galerne.catalog import builtin_entry
from galerne.engines.llamacpp.engine import EmbeddedModelConfig, LlamaCppEngine
from galerne.errors import InvalidRequestError
from galerne.inference.types import FinishReason
from galerne.inference.validate import to_generation_request
from galerne.protocol import chat as wire

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "structured" / "schemas.json"
OPEN_ENDED = {"cache_entry_metadata", "http_headers_map", "event_metadata_open", "plugin_settings_open"}
BUCKETS = ("valid", "open_length", "length", "refused", "invalid", "error")


def bucket_of(name: str, schema: dict[str, Any], reason: FinishReason, text: str, is_closed_early: bool) -> str:
    if reason is FinishReason.ERROR:
        return "error"
    if reason is FinishReason.LENGTH and not is_closed_early:
        return "open_length" if name in OPEN_ENDED else "length"
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return "invalid"
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return "valid" if validator.is_valid(value) else "invalid"


async def run_one(engine: LlamaCppEngine, entry: dict[str, Any], temperature: float, max_tokens: int) -> dict[str, Any]:
    started = time.monotonic()
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": entry["prompt"]}],
        "response_format": {"type": "json_schema", "json_schema": {"name": entry["name"], "schema": entry["schema"]}},
        "temperature": temperature,
        "random_seed": 7,
        "max_tokens": max_tokens,
    }
    outcome: dict[str, Any] = {"name": entry["name"], "bucket": "error", "tokens": 0, "text": "", "detail": ""}
    try:
        request = to_generation_request(wire.ChatCompletionRequest.model_validate(body), model_id="bench")
        (generation,) = engine.submit(await engine.prepare(request))
    except InvalidRequestError as exc:
        outcome.update(bucket="refused", detail=exc.message[:300])
        return outcome
    parts: list[str] = []
    async for event in generation.events():
        parts.append(event.text)
        if event.finish_reason is not None:
            text = "".join(parts)
            outcome.update(
                bucket=bucket_of(entry["name"], entry["schema"], event.finish_reason, text, event.is_closed_early),
                tokens=event.completion_tokens,
                text=text[:400],
                detail=event.error or "",
            )
    outcome["seconds"] = round(time.monotonic() - started, 2)
    return outcome


async def run_all(args: argparse.Namespace, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    entry = builtin_entry(args.model)
    started = time.monotonic()
    engine = LlamaCppEngine(
        EmbeddedModelConfig(
            path=entry.gguf_path(),
            context_length=entry.context_length,
            num_slots=args.concurrency,
            num_threads=args.threads,
            model_id=entry.id,
            chat_template=entry.chat_template_source(),
            stop=entry.stop,
        )
    )
    engine.wait_until_ready()
    print(f"{entry.id}: engine ready (grammar tokenizer included) in {time.monotonic() - started:.1f} s", flush=True)
    limit = asyncio.Semaphore(args.concurrency)

    async def one(item: dict[str, Any]) -> dict[str, Any]:
        async with limit:
            outcome = await run_one(engine, item, args.temperature, args.max_tokens)
            print(f"  {outcome['bucket']:11} {outcome['tokens']:5} tok  {item['name']}", flush=True)
            return outcome

    try:
        return list(await asyncio.gather(*(one(item) for item in entries)))
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m", help="a built-in model id or alias (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--start", type=int, default=0, help="skip the first N schemas (to run the corpus in slices)")
    parser.add_argument("--limit", type=int, default=None, help="at most N schemas")
    parser.add_argument("--max-tokens", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path, default=None, help="write every outcome here")
    args = parser.parse_args(argv)
    corpus: list[dict[str, Any]] = json.loads(CORPUS.read_text())
    entries = corpus[args.start :][: args.limit]
    print(f"corpus: {len(entries)} schemas on {args.model}, temperature {args.temperature}, "
          f"max_tokens {args.max_tokens}, concurrency {args.concurrency}, {args.threads} threads", flush=True)
    started = time.monotonic()
    outcomes = asyncio.run(run_all(args, entries))
    wall = time.monotonic() - started
    counts = Counter(outcome["bucket"] for outcome in outcomes)
    print(f"\n{len(outcomes)} schemas in {wall:.0f} s: " + ", ".join(f"{b} {counts[b]}" for b in BUCKETS))
    for outcome in outcomes:
        if outcome["bucket"] in ("refused", "invalid", "error", "length"):
            print(f"  {outcome['bucket']}: {outcome['name']}: {outcome['detail'] or outcome['text'][:160]}")
    if args.json is not None:
        summary = {"model": args.model, "temperature": args.temperature, "counts": dict(counts), "wall_s": wall}
        args.json.write_text(json.dumps({**summary, "outcomes": outcomes}, indent=1))
    return 0 if counts["invalid"] == counts["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
