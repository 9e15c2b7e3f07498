"""The gateway's own overhead: Galerne (auth + limits + metering) and LiteLLM's proxy in front of an upstream
that answers instantly, against that upstream called directly, all in one run.

    .venv/bin/python benchmarks/bench_gateway.py                 # 16 clients, 10 s per setup
    .venv/bin/python benchmarks/bench_gateway.py --duration 20 --skip-litellm
    .venv/bin/python benchmarks/bench_gateway.py --scale-out --clients 1,16 --duration 5   # deployments, failover

Three processes per setup, so none shares a GIL with another: the upstream (a raw asyncio HTTP/1.1
responder answering every chat completion with a fixed reply, streamed when asked), the server under test,
and the load generator (16 keep-alive connections, each sending the next request as soon as the last
answer arrived). LiteLLM's proxy is installed from PyPI into `benchmarks/.venv-litellm` on first use.

`--scale-out` measures the routing layer instead: at each `--clients` count, the upstream direct, Galerne with
one remote deployment and Galerne with two (two upstream processes, least in flight); then a failover run
(two deployments, one upstream SIGKILLed halfway through) and the errors its clients saw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = REPO_ROOT / "benchmarks" / ".venv-litellm"
MODEL = "bench"
REPLY_WORDS = ["The", " answer", " is", " forty", "-two", "."]
MAX_TOKENS = 16
GALERNE = "galerne (auth+limits+metering)"
GALERNE_WORKERS = "galerne 2 workers, Redis limits"

# --- the upstream: fixed answers, as fast as asyncio can write them -----------------------------------------


def _completion_body() -> bytes:
    usage = {"prompt_tokens": 12, "completion_tokens": len(REPLY_WORDS), "total_tokens": 12 + len(REPLY_WORDS)}
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(REPLY_WORDS)},
                     "finish_reason": "stop"}],
        "usage": usage,
    }).encode()


def _stream_body() -> bytes:
    def event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
                 "model": MODEL, "choices": choices, "usage": usage}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    parts = [event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    parts += [event([{"index": 0, "delta": {"content": word}, "finish_reason": None}]) for word in REPLY_WORDS]
    usage = {"prompt_tokens": 12, "completion_tokens": len(REPLY_WORDS), "total_tokens": 12 + len(REPLY_WORDS)}
    parts.append(event([{"index": 0, "delta": {}, "finish_reason": "stop"}], usage))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def _response(body: bytes, content_type: str) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _serve_upstream(port: int) -> None:
    plain = _response(_completion_body(), "application/json")
    streamed = _response(_stream_body(), "text/event-stream")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                writer.write(streamed if b'"stream":true' in body.replace(b" ", b"") else plain)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# --- the load generator: keep-alive HTTP/1.1 clients written on asyncio streams -----------------------------


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, chunked = None, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _load(url: str, key: str, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "What is the answer?"}],
                       "max_tokens": MAX_TOKENS}).encode()
    request = (
        f"POST /{path} HTTP/1.1\r\nhost: {host_port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                break
            writer.write(request)
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
                continue
            done = time.perf_counter()
            if sent >= measure_from and done <= stop_at:
                if status == 200:
                    latencies.append(done - sent)
                else:
                    errors += 1
        writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    latencies.sort()
    return {
        "requests_per_second": len(latencies) / duration,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan"),
        "num_requests": len(latencies),
        "errors": errors,
    }


# --- orchestration ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server did not open port {port}:\n{log.read_text(errors='replace')[-3000:]}")


@contextmanager
def running(
    command: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                   cwd=REPO_ROOT, start_new_session=True)
    try:
        wait_for_port(port, process, log)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def measure(
    url: str, key: str, args: argparse.Namespace, *, kill: subprocess.Popen[bytes] | None = None
) -> dict[str, Any]:
    """Run the load generator; with `kill`, SIGKILL that process halfway through the measured time."""
    command = [sys.executable, __file__, "--role", "load", "--url", url, "--key", key,
               "--concurrency", str(args.concurrency), "--duration", str(args.duration), "--warmup", str(args.warmup)]
    load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    if kill is not None:
        time.sleep(args.warmup + args.duration / 2)
        os.killpg(kill.pid, signal.SIGKILL)
    stdout, _ = load.communicate()
    if load.returncode != 0:
        raise RuntimeError(f"the load generator failed ({load.returncode})")
    return dict(json.loads(stdout))


def galerne_cli(home: Path, *arguments: str) -> Any:
    env = {**os.environ, "GALERNE_HOME": str(home), "GALERNE_CONFIG": str(home / "catalogue.toml")}
    result = subprocess.run([sys.executable, "-m", "galerne", *arguments, "--json"], capture_output=True, text=True,
                            env=env, check=True, cwd=REPO_ROOT)
    return json.loads(result.stdout)


def bench_galerne(
    upstream_url: str | list[str],
    work: Path,
    args: argparse.Namespace,
    *,
    workers: int = 1,
    redis_url: str | None = None,
    kill: subprocess.Popen[bytes] | None = None,
) -> dict[str, Any]:
    """One Galerne in front of the upstream, or of several as deployments of one model (a list of URLs)."""
    home = Path(tempfile.mkdtemp(prefix=f"galerne-{workers}-", dir=work))
    config = home / "catalogue.toml"
    model = f'[[models]]\nid = "{MODEL}"\ncontext_length = 8192\nprice_input_per_million = 0.1\n' \
            "price_output_per_million = 0.3\n"
    if isinstance(upstream_url, str):
        model += f'engine = "remote"\nbase_url = "{upstream_url}"\nmax_concurrent_requests = 256\n'
    else:
        model += "".join(f'[[models.deployments]]\nengine = "remote"\nbase_url = "{url}"\nmax_in_flight = 256\n'
                         for url in upstream_url)
    config.write_text(model)
    galerne_cli(home, "projects", "create", "bench", "--rpm", "100000000", "--tpm", "100000000000", "--concurrency",
                "1000", "--models", MODEL)
    key = galerne_cli(home, "keys", "create", "--project", "bench")["key"]
    port = free_port()
    command = [sys.executable, "-m", "galerne", "serve", "--config", str(config), "--port", str(port),
               "--workers", str(workers)]
    # No per-request log line, as LiteLLM with LITELLM_LOG=ERROR; metering still writes every request.
    env = {"GALERNE_HOME": str(home), "GALERNE_ACCESS_LOG": "false",
           **({"GALERNE_REDIS_URL": redis_url} if redis_url else {})}
    with running(command, port, home / "server.log", env):
        time.sleep(1 if workers == 1 else 4)  # workers open the port before all of them are ready
        result = measure(f"http://127.0.0.1:{port}/v1/chat/completions", key, args, kill=kill)
    usage = galerne_cli(home, "usage", "--by", "project")
    result["metered_requests"] = usage[0]["num_requests"] if usage else 0
    return result


def litellm_executable() -> Path:
    executable = LITELLM_VENV / "bin" / "litellm"
    if not executable.exists():
        print(f"installing litellm[proxy] into {LITELLM_VENV} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"], check=True)
    return executable


def bench_litellm(upstream_url: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    home = work / "litellm"
    home.mkdir()
    config = home / "config.yaml"
    # Without a database LiteLLM has no virtual keys, budgets or spend logs (they need PostgreSQL through
    # Prisma, whose engines it downloads at run time); the closest configuration is a master key for auth
    # and rpm/tpm limits on the deployment, enforced by its router.
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream_url}\n"
        "      api_key: sk-upstream\n"
        "      rpm: 100000000\n"
        "      tpm: 100000000000\n"
        "general_settings:\n"
        "  master_key: sk-bench-master\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )
    port = free_port()
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
           "DISABLE_SCHEMA_UPDATE": "True"}
    command = [str(litellm_executable()), "--config", str(config), "--port", str(port), "--host", "127.0.0.1"]
    with running(command, port, home / "proxy.log", env):
        time.sleep(2)  # the port opens before the router is ready
        return measure(f"http://127.0.0.1:{port}/v1/chat/completions", "sk-bench-master", args)


def main(args: argparse.Namespace) -> None:
    if args.role == "upstream":
        asyncio.run(_serve_upstream(args.port))
        return
    if args.role == "load":
        print(json.dumps(asyncio.run(_load(args.url, args.key, args.concurrency, args.warmup, args.duration))))
        return
    if args.scale_out:
        scale_out(args)
        return
    work = Path(tempfile.mkdtemp(prefix="galerne-bench-gateway-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        port = free_port()
        upstream_url = f"http://127.0.0.1:{port}/v1"
        with running([sys.executable, __file__, "--role", "upstream", "--port", str(port)], port, work / "up.log"):
            results["upstream direct"] = measure(f"{upstream_url}/chat/completions", "none", args)
            results[GALERNE] = bench_galerne(upstream_url, work, args)
            if args.redis_url:
                results[GALERNE_WORKERS] = bench_galerne(upstream_url, work, args, workers=2, redis_url=args.redis_url)
            if not args.skip_litellm:
                results["litellm proxy"] = bench_litellm(upstream_url, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)


def scale_out(args: argparse.Namespace) -> None:
    """Gateway overhead with one and two deployments at each client count, then a failover run."""
    work = Path(tempfile.mkdtemp(prefix="galerne-bench-scale-out-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
        upstream = [sys.executable, __file__, "--role", "upstream", "--port"]
        with running([*upstream, str(ports[0])], ports[0], work / "up0.log"), \
                running([*upstream, str(ports[1])], ports[1], work / "up1.log"):
            for clients in args.clients:
                run = argparse.Namespace(**{**vars(args), "concurrency": clients})
                results[f"{clients:>2} clients: upstream direct"] = measure(f"{urls[0]}/chat/completions", "-", run)
                results[f"{clients:>2} clients: galerne, 1 deployment"] = bench_galerne(urls[0], work, run)
                results[f"{clients:>2} clients: galerne, 2 deployments"] = bench_galerne(urls, work, run)
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
        run = argparse.Namespace(**{**vars(args), "concurrency": max(args.clients)})
        with running([*upstream, str(ports[0])], ports[0], work / "up2.log"), \
                running([*upstream, str(ports[1])], ports[1], work / "up3.log") as doomed:
            results[f"{run.concurrency:>2} clients: failover (1 of 2 killed)"] = bench_galerne(
                urls, work, run, kill=doomed
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.duration:g} s measured after {args.warmup:g} s warm-up per setup, non-streamed chat completions; "
          "the failover run kills one of its two upstreams halfway through the measured time\n")
    print(f"{'setup':44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, result in results.items():
        print(f"{name:44} {result['requests_per_second']:9.0f} {result['p50_ms']:8.2f} {result['p99_ms']:8.2f} "
              f"{result['errors']:7d}")
    for clients in args.clients:
        direct = results[f"{clients:>2} clients: upstream direct"]
        for setup in ("1 deployment", "2 deployments"):
            galerne = results[f"{clients:>2} clients: galerne, {setup}"]
            print(f"{clients:>2} clients, {setup}: overhead p50 {galerne['p50_ms'] - direct['p50_ms']:.2f} ms, "
                  f"p99 {galerne['p99_ms'] - direct['p99_ms']:.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n{args.concurrency} concurrent clients, {args.duration:g} s measured after {args.warmup:g} s warm-up, "
          f"non-streamed chat completions\n")
    print(f"{'setup':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, result in results.items():
        print(f"{name:34} {result['requests_per_second']:9.0f} {result['p50_ms']:8.2f} {result['p99_ms']:8.2f} "
              f"{result['errors']:7d}")
    direct = results["upstream direct"]
    litellm = results.get("litellm proxy")
    for name in (GALERNE, GALERNE_WORKERS):
        if name not in results:
            continue
        galerne = results[name]
        print(f"\n{name}: metered {galerne['metered_requests']} requests (all of the run, warm-up included)")
        print(f"  ÷ direct req/s:   {galerne['requests_per_second'] / direct['requests_per_second']:.3f}")
        print(f"  overhead p50:     {galerne['p50_ms'] - direct['p50_ms']:.2f} ms")
        if litellm is not None:
            ratio = galerne["requests_per_second"] / max(litellm["requests_per_second"], 1e-9)
            print(f"  ÷ litellm req/s:  {ratio:.1f}  (goal ≥ 10)")
    if litellm is not None:
        print(f"\nlitellm overhead p50: {litellm['p50_ms'] - direct['p50_ms']:.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds measured per setup.")
    parser.add_argument("--warmup", type=float, default=2.0, help="Seconds of load before measuring.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0",
                        help="Also measure 2 workers sharing limits in this Redis; '' to skip.")
    parser.add_argument("--json", help="Also write the results to this file.")
    parser.add_argument("--scale-out", action="store_true", help="Measure deployments and failover instead.")
    parser.add_argument("--clients", type=lambda text: [int(part) for part in text.split(",")], default=[1, 16],
                        help="Client counts for --scale-out, e.g. 1,16.")
    parser.add_argument("--role", choices=["bench", "upstream", "load"], default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    main(build_parser().parse_args())
