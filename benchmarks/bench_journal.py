"""What the durable usage journal costs per request: `UsageMeter` in-process, and the latency a client
sees through `galerne serve` in front of an upstream that answers at once, journal on against journal off
(`GALERNE_USAGE_JOURNAL=false`, the in-memory path), measured in the same run.

    .venv/bin/python benchmarks/bench_journal.py                  # 3 repeats, 5 s per measurement (about 2 min)
    .venv/bin/python benchmarks/bench_journal.py --repeats 2 --duration 3 --json results.json

The HTTP part reuses `bench_gateway.py`'s upstream responder and load generator (each in its own process).
Every repeat starts one server per mode, in alternating order, and measures 1 client then 16 clients on it;
figures are the median over repeats with the range (min-max) beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_gateway as gateway

from galerne.services.metering import MeterOptions, UsageEvent, UsageMeter, UsageStatus
from galerne.storage.database import Database

MODES = {"journal on": "true", "journal off": "false"}


# --- in-process: the call, and the writer ------------------------------------------------------------------


def bench_meter(work: Path, is_journalled: bool, num_records: int) -> dict[str, float]:
    """The `record` call on the request path (the writer idle, so its work is not charged to the call), then
    the writer's own time per record: from memory as usual, and (journal only) read back from disk, as
    after a database outage."""
    home = work / f"meter-{is_journalled}-{time.monotonic_ns()}"
    home.mkdir()
    database = Database.open(f"sqlite:///{home / 'galerne.db'}")
    events = [
        UsageEvent(
            project_id="0123456789abcdef", key_id="fedcba987654", model="bench", prompt_tokens=12 + index % 50,
            completion_tokens=6, cost_micros=3, ttft_seconds=0.004, duration_seconds=0.006,
            status=UsageStatus.OK, finished_at=datetime.now(UTC),
        )
        for index in range(num_records)
    ]
    results: dict[str, float] = {}
    try:
        idle = MeterOptions(is_journalled=is_journalled, flush_seconds=3600, max_batch=num_records + 1,
                            max_pending=num_records + 1)
        meter = UsageMeter(database, home / "usage-journal", idle)
        durations: list[int] = []
        for event in events:
            started = time.perf_counter_ns()
            meter.record(event)
            durations.append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        meter.close()
        results["writer_us"] = (time.perf_counter_ns() - started) / num_records / 1000
        durations.sort()
        results |= {
            "mean_us": statistics.fmean(durations) / 1000,
            "p50_us": durations[len(durations) // 2] / 1000,
            "p99_us": durations[int(len(durations) * 0.99)] / 1000,
        }
        if is_journalled:  # everything past the first record waits on disk only, then is read back
            meter = UsageMeter(database, home / "usage-journal", MeterOptions(flush_seconds=3600, max_pending=1))
            for event in events:
                meter.record(event)
            started = time.perf_counter_ns()
            meter.close()
            results["from_disk_us"] = (time.perf_counter_ns() - started) / num_records / 1000
    finally:
        database.close()
    return results


# --- through HTTP ------------------------------------------------------------------------------------------


def prepare_home(work: Path, upstream_url: str) -> tuple[Path, str]:
    home = work / "galerne"
    home.mkdir()
    (home / "catalogue.toml").write_text(
        f'[[models]]\nid = "{gateway.MODEL}"\nengine = "remote"\nbase_url = "{upstream_url}"\ncontext_length = 8192\n'
        "max_concurrent_requests = 256\nprice_input_per_million = 0.1\nprice_output_per_million = 0.3\n"
    )
    gateway.galerne_cli(home, "projects", "create", "bench", "--rpm", "100000000", "--tpm", "100000000000",
                        "--concurrency", "1000", "--models", gateway.MODEL)
    return home, str(gateway.galerne_cli(home, "keys", "create", "--project", "bench")["key"])


def bench_server(home: Path, key: str, journal: str, args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """One server with the journal on or off: latency at each client count, and what it metered."""
    port = gateway.free_port()
    command = [sys.executable, "-m", "galerne", "serve", "--config", str(home / "catalogue.toml"), "--port", str(port)]
    env = {"GALERNE_HOME": str(home), "GALERNE_ACCESS_LOG": "false", "GALERNE_USAGE_JOURNAL": journal}
    before = metered(home)
    results: dict[int, dict[str, Any]] = {}
    with gateway.running(command, port, home / "server.log", env):
        time.sleep(1)
        for concurrency in args.clients:
            load = argparse.Namespace(concurrency=concurrency, duration=args.duration, warmup=args.warmup)
            results[concurrency] = gateway.measure(f"http://127.0.0.1:{port}/v1/chat/completions", key, load)
    num_sent = sum(r["num_requests"] for r in results.values())
    results[0] = {"metered": metered(home) - before, "measured": num_sent}
    return results


def metered(home: Path) -> int:
    usage = gateway.galerne_cli(home, "usage", "--by", "project")
    return int(usage[0]["num_requests"]) if usage else 0


def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="galerne-bench-journal-"))
    calls: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    http: dict[str, dict[int, list[dict[str, Any]]]] = {mode: {c: [] for c in args.clients} for mode in MODES}
    direct: dict[int, list[dict[str, Any]]] = {c: [] for c in args.clients}
    metering: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    load_before = os.getloadavg()[0]
    try:
        for repeat in range(args.repeats):
            for mode in _order(repeat):
                calls[mode].append(bench_meter(work, MODES[mode] == "true", args.records))
        if not args.skip_http:
            port = gateway.free_port()
            upstream_url = f"http://127.0.0.1:{port}/v1"
            upstream = [sys.executable, gateway.__file__, "--role", "upstream", "--port", str(port)]
            with gateway.running(upstream, port, work / "up.log"):
                home, key = prepare_home(work, upstream_url)
                for repeat in range(args.repeats):
                    for concurrency in args.clients:
                        load = argparse.Namespace(concurrency=concurrency, duration=args.duration, warmup=args.warmup)
                        direct[concurrency].append(gateway.measure(f"{upstream_url}/chat/completions", "none", load))
                    for mode in _order(repeat):
                        results = bench_server(home, key, MODES[mode], args)
                        metering[mode].append(results.pop(0))
                        for concurrency, result in results.items():
                            http[mode][concurrency].append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(calls, http, direct, metering, args, (load_before, os.getloadavg()[0]))


def _order(repeat: int) -> list[str]:
    """Alternate which mode goes first, so a drift in machine load does not favour one of them."""
    modes = list(MODES)
    return modes if repeat % 2 == 0 else modes[::-1]


def _spread(values: list[float], unit: str = "", digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def report(
    calls: dict[str, list[dict[str, float]]],
    http: dict[str, dict[int, list[dict[str, Any]]]],
    direct: dict[int, list[dict[str, Any]]],
    metering: dict[str, list[dict[str, Any]]],
    args: argparse.Namespace,
    load: tuple[float, float],
) -> None:
    print(f"\n{args.repeats} repeats; median (min-max) over repeats; load average {load[0]:.1f} before, "
          f"{load[1]:.1f} after (2 cores: above ~1.5 the figures are noisy)\n")
    print(f"UsageMeter, {args.records} records per repeat into SQLite: the `record` call (writer idle), then the "
          "writer's time per record")
    print(f"{'mode':12} {'call mean µs':>22} {'call p50 µs':>22} {'call p99 µs':>22} {'writer µs/record':>22}")
    for mode, runs in calls.items():
        figures = ("mean_us", "p50_us", "p99_us", "writer_us")
        print(f"{mode:12} " + " ".join(f"{_spread([r[f] for r in runs]):>22}" for f in figures))
    on = statistics.median(r["mean_us"] for r in calls["journal on"])
    off = statistics.median(r["mean_us"] for r in calls["journal off"])
    print(f"journal cost per request on the request path: {on - off:.2f} µs (difference of the median means)")
    print(f"writer, records read back from the journal (after an outage): "
          f"{_spread([r['from_disk_us'] for r in calls['journal on']])} µs/record\n")
    if not direct[args.clients[0]]:
        return
    print(f"HTTP, non-streamed completions against the instant upstream, {args.duration:g} s after "
          f"{args.warmup:g} s warm-up")
    print(f"{'setup':22} {'clients':>7} {'req/s':>22} {'p50 ms':>22} {'p99 ms':>22}")
    for concurrency in args.clients:
        rows = {"upstream direct": direct[concurrency]} | {f"galerne, {m}": http[m][concurrency] for m in MODES}
        for name, runs in rows.items():
            print(f"{name:22} {concurrency:7d} {_spread([r['requests_per_second'] for r in runs], digits=0):>22} "
                  f"{_spread([r['p50_ms'] for r in runs], digits=3):>22} "
                  f"{_spread([r['p99_ms'] for r in runs], digits=3):>22}")
        for figure in ("p50_ms", "p99_ms"):
            added = [on_run[figure] - off_run[figure]
                     for on_run, off_run in zip(http["journal on"][concurrency], http["journal off"][concurrency],
                                                strict=True)]
            print(f"  journal on - off, {figure[:3]} at {concurrency} client(s): {_spread(added, ' ms', 3)}")
    for mode, runs in metering.items():
        num_metered, num_measured = sum(r["metered"] for r in runs), sum(r["measured"] for r in runs)
        print(f"{mode}: metered {num_metered} requests, of which {num_measured} measured (warm-ups are metered too)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"record_call": calls, "http": http, "direct": direct, "metering": metering}, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records", type=int, default=20000, help="`record` calls timed per repeat and mode.")
    parser.add_argument("--duration", type=float, default=5.0, help="Seconds measured per client count.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Seconds of load before measuring.")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--skip-http", action="store_true", help="Only the in-process part.")
    parser.add_argument("--json", help="Also write the results to this file.")
    return parser


if __name__ == "__main__":
    main(build_parser().parse_args())
