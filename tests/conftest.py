"""Shared fixtures: a real `galerne serve` process on loopback, driven over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from mistralai.client import Mistral

from galerne.catalog import default_catalog
from galerne.engines.llamacpp.model import LlamaModel


@dataclass
class RunningServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: Path, *, config: Path | None = None, env: dict[str, str] | None = None) -> RunningServer:
    """Start `python -m galerne serve` and wait until `/health` answers."""
    port = free_port()
    log_path = home / "server.log"
    command = [sys.executable, "-m", "galerne", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if config is not None:
        command += ["--config", str(config)]
    environment = {**os.environ, "GALERNE_HOME": str(home), **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not start in 60 s:\n{server.log()}")


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
    return str(httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["id"])


@pytest.fixture(scope="session")
def openai_client(server: RunningServer) -> openai.OpenAI:
    """The official OpenAI SDK, unchanged, pointed at the test server."""
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="session")
def mistral_client(server: RunningServer) -> Mistral:
    """The official Mistral SDK, unchanged, pointed at the test server."""
    return Mistral(api_key="unused", server_url=server.base_url)


@pytest.fixture(scope="session")
def model() -> Iterator[LlamaModel]:
    """The bundled SmolLM2 GGUF, loaded once (weights and tokenizer, no context)."""
    loaded = LlamaModel(default_catalog().default_entry().gguf_path())
    yield loaded
    loaded.close()
