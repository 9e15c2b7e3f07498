"""The sandbox contains hostile programs: each fails safely and the next one still runs.

Each hostile program is checked against the real thing it attempts (a listening socket on loopback, a file
outside its directory, the process table after a fork bomb), not only against its exit status.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from galerne.evals.sandbox import ExecutionResult, Sandbox, SandboxLimits, SandboxReport


def _run(program: str, **limits: Any) -> ExecutionResult:
    return asyncio.run(Sandbox(SandboxLimits(**limits)).run(program))


@pytest.fixture(scope="module")
def report() -> SandboxReport:
    return asyncio.run(Sandbox().probe())


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    yield server
    server.close()


def _accepted(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except TimeoutError:
        return False
    connection.close()
    return True


def test_the_network_is_isolated_by_at_least_one_real_mechanism(report: SandboxReport) -> None:
    assert report.isolates_network, report.describe() + " " + report.problems


def test_a_passing_program_passes_and_may_write_in_its_own_directory() -> None:
    result = _run("open('out.txt', 'w').write('ok')\nassert open('out.txt').read() == 'ok'\n")
    assert result.status == "passed", result.detail


def test_a_failing_test_fails() -> None:
    result = _run("assert 1 + 1 == 3\n")
    assert result.status == "failed" and "AssertionError" in result.detail


def test_opening_a_socket_fails_and_nothing_connects(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    result = _run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n")
    assert result.status == "failed"
    assert not _accepted(listener)


@pytest.mark.parametrize("layer", ["namespaces", "landlock"])
def test_each_network_layer_holds_on_its_own(listener: socket.socket, layer: str) -> None:
    probe = asyncio.run(Sandbox(SandboxLimits(layers=(layer,))).probe())
    if not (probe.network_namespace if layer == "namespaces" else probe.tcp_denied):
        pytest.skip(f"this machine does not allow the {layer} layer: {probe.problems}")
    port = listener.getsockname()[1]
    result = _run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n", layers=(layer,))
    assert result.status == "failed"
    assert not _accepted(listener)


def test_writing_outside_its_directory_fails(tmp_path: Path, report: SandboxReport) -> None:
    if not report.writes_confined:
        pytest.skip(f"no Landlock here: {report.problems}")
    target = tmp_path / "escaped.txt"
    tmp_path.chmod(0o777)  # so that only the sandbox, not file permissions, can stop the write
    result = _run(f"open({str(target)!r}, 'w').write('x')\n")
    assert result.status == "failed" and "Permission" in result.detail
    assert not target.exists()


def test_allocating_4_gb_fails() -> None:
    result = _run("block = bytearray(4 * 1024 ** 3)\n", memory_bytes=512 << 20)
    assert result.status == "failed" and "MemoryError" in result.detail


def test_a_fork_bomb_is_stopped_and_leaves_no_process() -> None:
    marker = f"bomb{uuid.uuid4().hex[:10]}"  # the process name every copy inherits, to count them after
    bomb = (
        f"import ctypes, os\nctypes.CDLL(None).prctl(15, b'{marker}', 0, 0, 0)\n"
        "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    started = time.monotonic()
    result = _run(bomb, seconds=2.0)
    assert result.status in ("timeout", "failed")
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 5  # killing a few thousand processes takes the kernel a moment
    while (survivors := subprocess.run(["pgrep", "-x", marker], capture_output=True, text=True).stdout.split()):
        assert time.monotonic() < deadline, f"{len(survivors)} copies of the fork bomb outlived it"
        time.sleep(0.1)


def test_a_program_that_never_ends_is_killed_at_its_time_limit() -> None:
    result = _run("import time\ntime.sleep(60)\n", seconds=1.0)
    assert result.status == "timeout"
    assert result.seconds < 5


def test_printing_without_end_fails_at_the_file_size_limit() -> None:
    result = _run("import sys\nwhile True:\n    sys.stdout.write('x' * 100_000)\n", max_file_bytes=1 << 20)
    assert result.status == "failed" and "File too large" in result.detail
