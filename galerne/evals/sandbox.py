"""Run model-written code in a confined subprocess and say whether its tests passed.

Each program gets a fresh temporary directory, and `jail.py` confines it before it starts (see that
module for the layers): no network, writes only in its directory, bounded memory, CPU time, processes and
file sizes, and a wall-clock timeout after which the whole process tree is killed. Which layers held on this
machine is in `SandboxReport`: `galerne eval run` prints it, and refuses to run code without any network
isolation unless told `--allow-weak-sandbox`.

What it does not guarantee: reads are not confined (a program can read any file the user running the
evaluation can), and without Landlock (kernel < 5.13, or a seccomp profile that blocks it) writes are only
kept out of other users' files by running as `nobody` (when started as root) — `/tmp` stays writable.

Example::

    sandbox = Sandbox(SandboxLimits(seconds=10))
    result = await sandbox.run("assert 1 + 1 == 2\\n")
    result.status                     # "passed"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from galerne.errors import ConfigurationError

JAIL = Path(__file__).with_name("jail.py")
_REPORT_PREFIX = b"GALERNE-SANDBOX "
_MAX_DETAIL = 2000

Outcome = Literal["passed", "failed", "timeout", "error"]


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Per program: wall-clock seconds, address space, processes (the program counts), bytes per file."""

    seconds: float = 10.0
    memory_bytes: int = 1 << 30
    max_processes: int = 16
    max_file_bytes: int = 16 << 20
    layers: tuple[str, ...] = ("namespaces", "landlock")  # fewer only to test each layer on its own


@dataclass(frozen=True, slots=True)
class SandboxReport:
    """Which confinement layers held (from the launcher's own report)."""

    network_namespace: bool = False
    pid_namespace: bool = False
    writes_confined: bool = False
    tcp_denied: bool = False
    signals_scoped: bool = False
    user: str = ""
    user_namespace: bool = False
    landlock_abi: int = 0
    problems: str = ""

    @property
    def isolates_network(self) -> bool:
        return self.network_namespace or self.tcp_denied

    def describe(self) -> str:
        """One line for the operator: what holds, what does not."""
        network = (
            "network namespace" + (" (in a user namespace)" if self.user_namespace else "")
            if self.network_namespace
            else "TCP refused by Landlock (UDP and UNIX sockets open)" if self.tcp_denied else "NOT isolated"
        )
        writes = "only in its temp dir (Landlock)" if self.writes_confined else "NOT confined"
        tree = "killed as a whole (PID namespace)" if self.pid_namespace else "killed by process group"
        return (
            f"sandbox: network {network}; writes {writes}; process tree {tree}; runs as {self.user}; "
            f"landlock ABI {self.landlock_abi}"
        )

    @classmethod
    def parse(cls, data: dict[str, Any]) -> SandboxReport:
        problems = "; ".join(str(data[key]) for key in ("namespace_error", "landlock_error") if key in data)
        return cls(
            network_namespace=bool(data.get("network_namespace")), pid_namespace=bool(data.get("pid_namespace")),
            writes_confined=bool(data.get("writes_confined")), tcp_denied=bool(data.get("tcp_denied")),
            signals_scoped=bool(data.get("signals_scoped")), user=str(data.get("user", "")),
            user_namespace=bool(data.get("user_namespace")),
            landlock_abi=int(data.get("landlock_abi", 0)), problems=problems,
        )


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    status: Outcome
    detail: str
    seconds: float
    report: SandboxReport

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class Sandbox:
    """Runs programs one subprocess each, at most `max_parallel` at a time (they are CPU-bound)."""

    def __init__(self, limits: SandboxLimits | None = None, *, max_parallel: int | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self._slots = asyncio.Semaphore(max_parallel or os.cpu_count() or 1)

    async def probe(self) -> SandboxReport:
        """What confinement this machine allows, from running an empty program; a sandbox that cannot run
        even that is a ConfigurationError (every item would fail for the sandbox's sake, not the model's)."""
        result = await self.run("pass\n")
        if not result.passed:
            raise ConfigurationError(f"the code sandbox cannot run Python on this machine: {result.detail.strip()}")
        return result.report

    async def run(self, program: str) -> ExecutionResult:
        """Run `program`; `passed` when it exits 0 within the limits."""
        async with self._slots:
            workdir = Path(tempfile.mkdtemp(prefix="galerne-eval-"))
            try:
                return await self._run_in(workdir, program)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    async def _run_in(self, workdir: Path, program: str) -> ExecutionResult:
        program_path = workdir / "program.py"
        program_path.write_text(program, encoding="utf-8")
        program_path.chmod(0o644)
        config = {
            "workdir": str(workdir), "program": str(program_path), "memory_bytes": self.limits.memory_bytes,
            "cpu_seconds": max(1, int(self.limits.seconds + 0.999)), "max_processes": self.limits.max_processes,
            "max_file_bytes": self.limits.max_file_bytes, "layers": list(self.limits.layers),
        }
        started = time.monotonic()
        # Output goes to files in the work directory, not pipes: RLIMIT_FSIZE bounds them (a program printing
        # without end cannot fill our memory), and no stray descendant can keep a pipe open.
        with (workdir / "stdout").open("wb") as stdout_file, (workdir / "stderr").open("wb") as stderr_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", str(JAIL), json.dumps(config), stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout_file, stderr=stderr_file, start_new_session=True,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        is_timeout = False
        try:
            await asyncio.wait_for(process.wait(), timeout=self.limits.seconds)
        except TimeoutError:
            is_timeout = True
        finally:
            if process.returncode is None:
                _kill_tree(process.pid)
                await process.wait()
        seconds = time.monotonic() - started
        report, errors = _split_report(_tail(workdir / "stderr"))
        if is_timeout:
            return ExecutionResult("timeout", f"killed after {self.limits.seconds:g} s", seconds, report)
        if process.returncode == 0:
            return ExecutionResult("passed", "", seconds, report)
        detail = (errors or _tail(workdir / "stdout")).decode("utf-8", "replace")[-_MAX_DETAIL:]
        if not report.user:  # the launcher itself failed before confining anything
            return ExecutionResult("error", detail, seconds, report)
        return ExecutionResult("failed", detail or f"exit status {process.returncode}", seconds, report)


def _tail(path: Path) -> bytes:
    """The report line and the last bytes of an output file (which may be up to RLIMIT_FSIZE long)."""
    with path.open("rb") as handle:
        head = handle.readline(4096)
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(len(head), size - 8 * _MAX_DETAIL))
        return head + handle.read()


def _split_report(stderr: bytes) -> tuple[SandboxReport, bytes]:
    first, _, rest = stderr.partition(b"\n")
    if not first.startswith(_REPORT_PREFIX):
        return SandboxReport(), stderr
    try:
        return SandboxReport.parse(json.loads(first[len(_REPORT_PREFIX):])), rest
    except (ValueError, TypeError):
        return SandboxReport(), stderr


def _kill_tree(pid: int) -> None:
    """SIGKILL the launcher's process group; its PID namespace (when it has one) dies with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
