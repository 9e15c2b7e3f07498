#!/usr/bin/env python
"""Do heavy requests stall everyone else? TTFT of short streams while huge prompts and schemas arrive.

Eight short streaming chats (greedy, max_tokens 8) start at the same instant, alone ("quiet"), then
together with two ~30k-token prompts (refused with `context_length_exceeded` after tokenizing: the cost
is rendering and tokenizing them) and two requests with a large, never-seen JSON schema (the cost is
compiling its grammar) ("loaded"); `/health` is polled every 50 ms meanwhile. Work that runs on the
event loop shows up as a long TTFT for the short streams and a slow `/health`.

    python benchmarks/bench_loop_stalls.py                      # this checkout, 5 repeats
    python benchmarks/bench_loop_stalls.py --baseline-ref f8705a6  # and an older commit, side by side

The baseline ref is checked out into a temporary git worktree and served the same way, one server at a
time. Only complete streams (finish_reason then `[DONE]`) count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bench_serving import REPO_ROOT, free_port, percentile, running_server, server_env  # beside this script

NUM_SHORT = 8
NUM_HEAVY_EACH = 2
LONG_PROMPT_WORDS = 30_000  # " word" is one token: ~30k tokens, ~150 kB
SCHEMA_FIELDS = 150


@dataclass
class Round:
    ttfts_s: list[float] = field(default_factory=list)
    num_complete: int = 0
    health_s: list[float] = field(default_factory=list)
    heavy_statuses: list[int] = field(default_factory=list)


@dataclass
class Target:
    name: str
    repo: Path
    quiet: list[Round] = field(default_factory=list)
    loaded: list[Round] = field(default_factory=list)


def short_body(model: str, index: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"Say hello to visitor number {index}."}],
        "stream": True,
        "temperature": 0,
        "max_tokens": 8,
    }


def long_prompt_body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "word " * LONG_PROMPT_WORDS}], "max_tokens": 8}


def large_schema_body(model: str) -> dict[str, Any]:
    """A schema no earlier request used (fresh names), so no grammar cache can help."""
    tag = uuid.uuid4().hex[:8]
    item = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}, "count": {"type": "integer"}},
        "required": ["code", "count"],
    }
    properties = {f"field_{tag}_{i}": item for i in range(SCHEMA_FIELDS)}
    schema = {"type": "object", "properties": properties, "required": list(properties)[:20]}
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Fill in the form."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "form", "schema": schema}},
        "max_tokens": 8,
    }


async def short_stream(client: httpx.AsyncClient, body: dict[str, Any], started: float, result: Round) -> None:
    ttft: float | None = None
    finish, done = None, False
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or []:
                    if choice["delta"].get("content") and ttft is None:
                        ttft = time.perf_counter() - started
                    finish = choice.get("finish_reason") or finish
    if ttft is not None and finish and done:
        result.ttfts_s.append(ttft)
        result.num_complete += 1


async def heavy(client: httpx.AsyncClient, body: dict[str, Any], result: Round) -> None:
    response = await client.post("/v1/chat/completions", json=body)
    result.heavy_statuses.append(response.status_code)


async def poll_health(client: httpx.AsyncClient, result: Round, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await client.get("/health")
        result.health_s.append(time.perf_counter() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def one_round(base_url: str, model: str, *, is_loaded: bool) -> Round:
    result = Round()
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_health(client, result, stop))
        started = time.perf_counter()
        tasks = [short_stream(client, short_body(model, i), started, result) for i in range(NUM_SHORT)]
        if is_loaded:
            for _ in range(NUM_HEAVY_EACH):
                tasks += [
                    heavy(client, long_prompt_body(model), result),
                    heavy(client, large_schema_body(model), result),
                ]
        await asyncio.gather(*tasks)
        stop.set()
        await poller
    return result


def measure(target: Target, repeats: int, workdir: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "galerne", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-auth"]
    home = workdir / f"home-{len(list(workdir.iterdir()))}"
    home.mkdir()
    env = server_env(home)
    env["PYTHONPATH"] = str(target.repo)
    log = home / "server.log"
    base_url = f"http://127.0.0.1:{port}"
    with running_server(command, env, f"{base_url}/health", log, cwd=target.repo):
        model = httpx.get(f"{base_url}/v1/models", timeout=10).json()["data"][0]["id"]
        asyncio.run(one_round(base_url, model, is_loaded=False))  # warm-up
        for _ in range(repeats):
            target.quiet.append(asyncio.run(one_round(base_url, model, is_loaded=False)))
            target.loaded.append(asyncio.run(one_round(base_url, model, is_loaded=True)))
            print(f"  {target.name}: {describe(target.quiet[-1])} | loaded {describe(target.loaded[-1])}", flush=True)


def describe(result: Round) -> str:
    p95 = percentile(result.ttfts_s, 95)
    health = max(result.health_s) if result.health_s else None
    return f"TTFT p95 {fmt_ms(p95)}, {result.num_complete}/{NUM_SHORT} complete, /health max {fmt_ms(health)}" + (
        f", heavy statuses {sorted(result.heavy_statuses)}" if result.heavy_statuses else ""
    )


def fmt_ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def spread(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    return f"median {fmt_ms(statistics.median(known))} (min {fmt_ms(min(known))}, max {fmt_ms(max(known))})"


def report(targets: list[Target]) -> None:
    print(f"\n=== TTFT p95 of {NUM_SHORT} short streams, per round, over {len(targets[0].quiet)} rounds ===")
    for target in targets:
        quiet = [percentile(r.ttfts_s, 95) for r in target.quiet]
        loaded = [percentile(r.ttfts_s, 95) for r in target.loaded]
        health = [max(r.health_s) if r.health_s else None for r in target.loaded]
        complete = sum(r.num_complete for r in target.quiet + target.loaded)
        total = NUM_SHORT * (len(target.quiet) + len(target.loaded))
        print(f"{target.name} ({target.repo})")
        print(f"  quiet  TTFT p95: {spread(quiet)}")
        print(f"  loaded TTFT p95: {spread(loaded)}")
        print(f"  loaded /health max: {spread(health)}")
        known = [(lo, q) for lo, q in zip(loaded, quiet, strict=True) if lo and q]
        if known:
            ratio = statistics.median(lo / q for lo, q in known)
            print(f"  loaded / quiet TTFT p95 (median of rounds): {ratio:.2f}x")
        print(f"  complete short streams: {complete}/{total}")
    if len(targets) == 2:
        current, baseline = targets
        now = statistics.median(p for r in current.loaded if (p := percentile(r.ttfts_s, 95)) is not None)
        before = statistics.median(p for r in baseline.loaded if (p := percentile(r.ttfts_s, 95)) is not None)
        print(f"\nloaded TTFT p95, {current.name} / {baseline.name}: {now / before:.2f}x")


@contextlib.contextmanager
def checkout(ref: str, workdir: Path) -> Iterator[Path]:
    path = workdir / "baseline-checkout"
    subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(path), ref], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(path)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-ref", default=None, help="a git ref to measure beside this checkout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="galerne-stalls-") as tmp:
        workdir = Path(tmp)
        targets = [Target("current", REPO_ROOT)]
        with contextlib.ExitStack() as stack:
            if args.baseline_ref:
                targets.append(
                    Target(f"baseline {args.baseline_ref}", stack.enter_context(checkout(args.baseline_ref, workdir)))
                )
            for target in targets:
                print(f"serving {target.name} ...", flush=True)
                measure(target, args.repeats, workdir)
        report(targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
