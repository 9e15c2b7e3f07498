"""Evaluation throughput: items/s for a multiple-choice task (ARC) and a generation task (GSM8K) at 1 and 8
requests in flight, through the same in-process services `galerne eval run` uses.

    .venv/bin/python benchmarks/bench_eval.py [--model smollm2] [--repeats 3] [--arc-items 24] [--gsm8k-items 8]

ARC is scored by log-likelihood when the model can score continuations, by a constrained letter otherwise
(the table says which). Each repeat uses another seed, so it is a new run (nothing resumed); the items are
synthetic, generated here in the official formats. Prints median items/s with min-max over the repeats, the
8-vs-1 ratio, and the machine's load average (other work on the machine skews the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from galerne.catalog import builtin_catalog
from galerne.config import Settings
from galerne.evals.runner import EvalConfig, EvalRunner
from galerne.evals.runtime import eval_runtime


def write_arc(path: Path, num_items: int) -> None:
    with path.open("w") as handle:
        for index in range(num_items):
            a, b = 3 + index % 7, 2 + index % 5
            answers = [a + b, a + b + 1, a + b - 1, a * b + 3]
            choices = [{"label": label, "text": f"{n} balls"} for label, n in zip("ABCD", answers, strict=True)]
            stem = f"A box has {a} red balls and {b} blue balls. How many balls are in the box?"
            record = {"id": f"bench-{index}", "answerKey": "A", "question": {"stem": stem, "choices": choices}}
            handle.write(json.dumps(record) + "\n")


def write_gsm8k(path: Path, num_items: int) -> None:
    with path.open("w") as handle:
        for index in range(num_items):
            a, b = 10 + index, 3 + index % 4
            handle.write(json.dumps({
                "question": f"Lea has {a} stickers and gives {b} to her brother. How many stickers does she keep?",
                "answer": f"She keeps {a} - {b} = <<{a}-{b}={a - b}>>{a - b} stickers.\n#### {a - b}",
            }) + "\n")


async def measure(args: argparse.Namespace, data: Path, home: Path) -> list[tuple[str, str, int, list[float]]]:
    settings = Settings(home=home)
    rows = []
    async with eval_runtime(settings, builtin_catalog((args.model,)), args.model, project="bench") as runtime:
        runner = EvalRunner(runtime.database, runtime.client, runtime.entry)
        await runner.run(EvalConfig(task="arc", data=data / "arc.jsonl", shots=0, limit=2, seed=10**6))  # warm-up
        seed = 0
        for task, file, count in (("arc", "arc.jsonl", args.arc_items), ("gsm8k", "test.jsonl", args.gsm8k_items)):
            for concurrency in (1, 8):
                rates = []
                scoring = ""
                for _ in range(args.repeats):
                    seed += 1
                    config = EvalConfig(task=task, data=data / file, shots=0, seed=seed, max_tokens=args.max_tokens)
                    scoring = runner.plan(config)[2]
                    started = time.perf_counter()
                    summary = await runner.run(config, concurrency=concurrency)
                    rates.append(summary.num_done / (time.perf_counter() - started))
                    assert summary.num_done == count and not summary.failures, summary
                rows.append((task, scoring, concurrency, rates))
                print(f"  measured {task} x{concurrency}: {', '.join(f'{rate:.2f}' for rate in rates)} items/s",
                      flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arc-items", type=int, default=24)
    parser.add_argument("--gsm8k-items", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        data.mkdir()
        write_arc(data / "arc.jsonl", args.arc_items)
        write_gsm8k(data / "test.jsonl", args.gsm8k_items)
        load_before = os.getloadavg()[0]
        rows = asyncio.run(measure(args, data, Path(scratch) / "home"))
        load_after = os.getloadavg()[0]
    print(f"model {args.model}, {os.cpu_count()} cores, load average {load_before:.2f} before / {load_after:.2f} after")
    print("| task | scoring | in flight | items/s (median) | min-max | x vs 1 |")
    print("|---|---|---|---|---|---|")
    baseline: dict[str, float] = {}
    for task, scoring, concurrency, rates in rows:
        median = statistics.median(rates)
        baseline.setdefault(task, median)
        print(f"| {task} | {scoring} | {concurrency} | {median:.2f} | {min(rates):.2f}-{max(rates):.2f} | "
              f"{median / baseline[task]:.2f} |")


if __name__ == "__main__":
    main()
