"""Keeps one engine process alive: start it, wait until its health URL answers, restart it when it dies, stop it.

Generic for any OpenAI-compatible server process (`vllm serve`, llama.cpp's server, another `galerne serve`):
it knows a command line and a health URL, nothing else. The child runs in a session of its own, so stopping
it reaches the workers it spawned (vLLM's tensor-parallel workers, a Ray driver) too: SIGTERM to the whole
group, then SIGKILL after `stop_seconds`.

Example::

    supervisor = Supervisor(ProcessSpec(["vllm", "serve", "mistralai/Mistral-7B-Instruct-v0.3", "--host",
                                         "127.0.0.1", "--port", "8001"], "http://127.0.0.1:8001/health"))
    supervisor.start()          # returns once /health answers 200
    supervisor.wait()           # until stopped (SIGTERM/SIGINT), restarting the child whenever it dies
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


class SupervisorError(RuntimeError):
    """The process could not be started or never became healthy."""


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    command: list[str]
    health_url: str
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    log_path: Path | None = None  # the child's stdout and stderr (appended); None: inherited
    start_seconds: float = 900.0  # how long a start may take until healthy (vLLM loading a 70B model: minutes)
    restart_backoff_seconds: float = 1.0  # the first wait before a restart; doubles while restarts fail, up to 60 s
    stop_seconds: float = 30.0
    poll_seconds: float = 0.5


class Supervisor:
    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self.num_restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child and wait until healthy; then watch it from a thread, restarting it if it dies."""
        self._launch()
        self._wait_healthy()
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()

    def wait(self) -> None:
        """Block until `stop` (from another thread or a signal handler)."""
        while not self._stopping.wait(1.0):
            pass

    def stop(self) -> None:
        """Stop the child and its process group: SIGTERM, then SIGKILL after `stop_seconds`. No restart follows."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None:
            _terminate(process, self.spec.stop_seconds)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=self.spec.stop_seconds + 5)

    def is_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.spec.health_url, timeout=5) as response: # our own health URL
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _launch(self) -> None:
        log = self.spec.log_path.open("ab") if self.spec.log_path is not None else None
        try:
            process = subprocess.Popen(
                self.spec.command,
                env={**os.environ, **self.spec.env},
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise SupervisorError(f"cannot start {self.spec.command[0]}: {exc.strerror}") from exc
        finally:
            if log is not None:
                log.close()
        with self._lock:
            self._process = process
        logger.info("started %s (pid %d)", " ".join(self.spec.command), process.pid)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.spec.start_seconds
        process = self._process
        while time.monotonic() < deadline and not self._stopping.is_set():
            if process is None or process.poll() is not None:
                code = process.returncode if process is not None else None
                raise SupervisorError(f"{self.spec.command[0]} exited with status {code} before it was healthy")
            if self.is_healthy():
                logger.info("pid %d is healthy at %s", process.pid, self.spec.health_url)
                return
            time.sleep(self.spec.poll_seconds)
        if self._stopping.is_set():
            return
        if process is not None:
            _terminate(process, self.spec.stop_seconds)
        raise SupervisorError(f"{self.spec.health_url} did not answer 200 within {self.spec.start_seconds:g} s")

    def _watch(self) -> None:
        backoff = self.spec.restart_backoff_seconds
        while not self._stopping.is_set():
            process = self._process
            if process is None or process.poll() is None:
                self._stopping.wait(self.spec.poll_seconds)
                continue
            if self._stopping.is_set():
                return
            logger.warning("pid %d exited with status %s; restarting in %g s", process.pid, process.returncode, backoff)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # workers it left behind
            if self._stopping.wait(backoff):
                return
            try:
                self._launch()
                self._wait_healthy()
            except SupervisorError as exc:
                logger.error("restart failed: %s", exc)
                backoff = min(backoff * 2, 60.0)
                continue
            self.num_restarts += 1
            backoff = self.spec.restart_backoff_seconds


def _terminate(process: subprocess.Popen[bytes], stop_seconds: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=stop_seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers that outlived it
