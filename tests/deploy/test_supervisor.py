"""The supervisor keeps a real engine process alive: a second `galerne serve` is the managed process (started,
waited for, killed with SIGKILL and restarted, stopped), and `galerne deploy vllm` builds vLLM's real command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from galerne.deploy.supervisor import ProcessSpec, Supervisor, SupervisorError
from tests.conftest import free_port


def galerne_serve(home: Path) -> tuple[list[str], str, dict[str, str]]:
    """`galerne serve` of a remote-only catalogue (no model to load: it starts in a second or two)."""
    config = home / "catalogue.toml"
    config.write_text('[[models]]\nid = "far"\nengine = "remote"\nbase_url = "http://127.0.0.1:9/v1"\n')
    port = free_port()
    command = [sys.executable, "-m", "galerne", "serve", "--no-auth", "--host", "127.0.0.1", "--port", str(port)]
    return command, f"http://127.0.0.1:{port}/health", {"GALERNE_HOME": str(home), "GALERNE_CONFIG": str(config)}


def test_a_killed_engine_process_is_restarted_and_stop_ends_it(tmp_path: Path) -> None:
    command, health_url, env = galerne_serve(tmp_path)
    supervisor = Supervisor(ProcessSpec(command, health_url, env=env, log_path=tmp_path / "child.log",
                                        start_seconds=60, restart_backoff_seconds=0.2, poll_seconds=0.1))
    supervisor.start()
    try:
        assert httpx.get(health_url).status_code == 200
        first = supervisor.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while supervisor.num_restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert supervisor.num_restarts == 1 and supervisor.pid != first
        assert httpx.get(health_url).status_code == 200
        second = supervisor.pid
    finally:
        supervisor.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(health_url)
    assert second is not None
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)


def test_a_process_that_dies_before_it_is_healthy_is_an_error(tmp_path: Path) -> None:
    spec = ProcessSpec([sys.executable, "-c", "raise SystemExit(3)"], f"http://127.0.0.1:{free_port()}/health")
    with pytest.raises(SupervisorError, match="exited with status 3"):
        Supervisor(spec).start()


def test_deploy_process_supervises_until_sigterm(tmp_path: Path) -> None:
    command, health_url, env = galerne_serve(tmp_path)
    cli = subprocess.Popen(
        [sys.executable, "-m", "galerne", "deploy", "process", "--health-url", health_url, "--", *command],
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert cli.stdout is not None
        line = cli.stdout.readline()
        while line and "supervising pid" not in line:
            line = cli.stdout.readline()
        assert httpx.get(health_url).status_code == 200, line
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=40) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(health_url)
    finally:
        if cli.poll() is None:
            cli.kill()


def test_deploy_vllm_builds_the_real_command_line_bound_to_loopback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "galerne", "deploy", "vllm", "--model", "mistralai/Mixtral-8x7B-Instruct-v0.1",
         "--tensor-parallel-size", "8", "--pipeline-parallel-size", "2", "--distributed-executor-backend", "ray",
         "--port", "8011", "--dry-run"],
        capture_output=True, text=True, check=True,
    )
    command = result.stdout.splitlines()[0]
    assert command == (
        "vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1 --host 127.0.0.1 --port 8011 --tensor-parallel-size 8 "
        "--pipeline-parallel-size 2 --distributed-executor-backend ray --enable-auto-tool-choice "
        "--tool-call-parser mistral"
    )
    assert 'engine = "vllm"' in result.stdout and 'base_url = "http://127.0.0.1:8011/v1"' in result.stdout
