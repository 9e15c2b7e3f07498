"""Shared fixtures: a real `galerne serve` process on loopback, driven over real HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from mistralai.client import Mistral

from galerne.catalog import BUNDLED_MODEL_ID, default_catalog
from galerne.engines.llamacpp.model import LlamaModel
from galerne.storage.database import Database
from tests.databases import fresh_database_url


def engine_threads() -> int:
    """llama.cpp threads for one test worker: the cores shared out between pytest-xdist's workers.

    Two workers each running a 2-thread engine on 2 cores oversubscribe them, and ggml's threads spin at
    every barrier waiting for a descheduled peer: the whole suite ran ~2x slower that way.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


def worker_threads() -> str:
    """`GALERNE_TEST_THREADS` if set, else this worker's share of the cores (`engine_threads`)."""
    return os.environ.get("GALERNE_TEST_THREADS") or str(engine_threads())


def pytest_configure(config: pytest.Config) -> None:
    """Servers, apps and CLI runs in tests serve SmolLM2 alone unless a test asks for more (its own `env` or a
    catalogue file): loading Gemma too into every test server would add its start-up to each of them.
    They share the cores with the other test workers (`worker_threads`).

    The thread count is set, not defaulted: the xdist controller runs this hook too and its workers inherit
    its environment, so with a default every worker kept the controller's count (all the cores) and each test
    server ran a 2-thread engine beside the other worker's on 2 cores (CI took 57 minutes instead of 15).
    """
    os.environ["GALERNE_MODELS"] = BUNDLED_MODEL_ID
    os.environ["GALERNE_NUM_THREADS"] = worker_threads()


@dataclass
class RunningServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    home: Path
    api_key: str = ""
    env: dict[str, str] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST with this server's test key (pass `headers=` to override)."""
        kwargs.setdefault("headers", self.headers)
        kwargs.setdefault("timeout", 60)
        return httpx.post(f"{self.base_url}{path}", **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("headers", self.headers)
        kwargs.setdefault("timeout", 60)
        return httpx.get(f"{self.base_url}{path}", **kwargs)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An async client with this server's base URL and test key."""
        return httpx.AsyncClient(base_url=self.base_url, headers=self.headers, **kwargs)

    def cli(self, *args: str) -> Any:
        """Run `galerne <args> --json` on this server's database and parse what it prints."""
        return run_cli(self.home, *args, env=self.env)


def run_cli(home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    environment = {**os.environ, "GALERNE_HOME": str(home), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "galerne", *args, "--json"], capture_output=True, text=True, env=environment, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"galerne {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return json.loads(result.stdout)


def create_key(home: Path, project: str = "tests", env: dict[str, str] | None = None, **limits: str) -> str:
    """A project (unlimited unless `limits` says otherwise, e.g. rpm="20") and a key for it."""
    options = [item for name, value in limits.items() for item in (f"--{name}", value)]
    run_cli(home, "projects", "create", project, *options, env=env)
    return str(run_cli(home, "keys", "create", "--project", project, env=env)["key"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    home: Path,
    *,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    api_key: str | None = None,
    extra_args: tuple[str, ...] = (),
    health_status: int = 200,
    module: str = "galerne",
    start_seconds: float = 60,
) -> RunningServer:
    """Start `python -m galerne serve` and wait until `/health` answers `health_status` (503: a part is down).

    Auth is on, as in production: unless `api_key` is given, a project `tests` without limits and a
    key for it are created first, and the returned server sends that key. `module` runs another entry
    point with the same command line (`tests.faulty_server`, the server with a planted bug).
    """
    if api_key is None and "--no-auth" not in extra_args:
        api_key = create_key(home, env=env)
    port = free_port()
    log_path = home / "server.log"
    command = [sys.executable, "-m", module, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if config is not None:
        command += ["--config", str(config)]
    command += list(extra_args)
    environment = {**os.environ, "GALERNE_HOME": str(home), **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path, home, api_key or "", env)
    deadline = time.monotonic() + start_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=5).status_code == health_status:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not start in {start_seconds:g} s:\n{server.log()}")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("galerne-home"))
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def model_id(server: RunningServer) -> str:
    return str(server.get("/v1/models").json()["data"][0]["id"])


@pytest.fixture(scope="session")
def openai_client(server: RunningServer) -> openai.OpenAI:
    """The official OpenAI SDK, unchanged, pointed at the test server."""
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0)


@pytest.fixture(scope="session")
def mistral_client(server: RunningServer) -> Mistral:
    """The official Mistral SDK, unchanged, pointed at the test server."""
    return Mistral(api_key=server.api_key, server_url=server.base_url)


@pytest.fixture(scope="session")
def model() -> Iterator[LlamaModel]:
    """The bundled SmolLM2 GGUF, loaded once (weights and tokenizer, no context)."""
    loaded = LlamaModel(default_catalog().default_entry().gguf_path())
    yield loaded
    loaded.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database: the same tests run on the embedded default and on real PostgreSQL."""
    with fresh_database_url(request.param, tmp_path) as url:
        opened = Database.open(url)
        yield opened
        opened.close()
