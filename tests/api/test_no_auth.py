"""`--no-auth` stays local and powerless: the app itself refuses a non-loopback host, serves only connections
made to a loopback address, and keeps `/admin` closed to its anonymous caller."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from galerne.api.app import create_app
from galerne.config import Settings, is_loopback
from galerne.errors import ConfigurationError
from tests.conftest import free_port

REMOTE_CATALOGUE = '[[models]]\nid = "far"\nengine = "remote"\nbase_url = "http://127.0.0.1:9/v1"\n'


def test_the_app_factory_refuses_no_auth_off_loopback(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.0.2.7", "::", "example.org"):
        with pytest.raises(ConfigurationError, match="loopback"):
            create_app(Settings(home=tmp_path, no_auth=True, host=host))
    create_app(Settings(home=tmp_path, no_auth=True, host="127.0.0.1"))


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.0.2.2", False), ("::ffff:192.0.2.2", False),
     ("localhost.example.org", False)],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def uvicorn_factory(home: Path, port: int, host: str, **env: str) -> subprocess.Popen[bytes]:
    """The app served by plain uvicorn, as an operator might, bypassing `galerne serve`'s own checks."""
    config = home / "catalogue.toml"
    config.write_text(REMOTE_CATALOGUE)
    environment = {**os.environ, "GALERNE_HOME": str(home), "GALERNE_CONFIG": str(config), "GALERNE_NO_AUTH": "true",
                   **env}
    command = [sys.executable, "-m", "uvicorn", "galerne.api.app:app_from_environment", "--factory",
               "--host", host, "--port", str(port)]
    log = (home / "server.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)


def test_plain_uvicorn_refuses_to_start_when_the_settings_say_no_auth_off_loopback(tmp_path: Path) -> None:
    process = uvicorn_factory(tmp_path, free_port(), "127.0.0.1", GALERNE_HOST="0.0.0.0")
    assert process.wait(timeout=60) != 0
    assert "allowed on loopback addresses only" in (tmp_path / "server.log").read_text()


def this_machines_address() -> str:
    """A non-loopback address of this machine (no packet is sent); skipped on a machine without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            pytest.skip("this machine has no non-loopback IPv4 address to test with")
        address = str(probe.getsockname()[0])
    if is_loopback(address):
        pytest.skip("this machine has no non-loopback IPv4 address to test with")
    return address


@pytest.fixture
def bound_to_every_address(tmp_path: Path) -> Iterator[int]:
    """The app with `no_auth` and the default host setting, yet listening on 0.0.0.0."""
    port = free_port()
    process = uvicorn_factory(tmp_path, port, "0.0.0.0")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_no_auth_app_answers_only_connections_made_to_loopback(bound_to_every_address: int) -> None:
    address = this_machines_address()
    local = httpx.get(f"http://127.0.0.1:{bound_to_every_address}/v1/models", timeout=10)
    assert local.status_code == 200 and local.json()["data"][0]["id"] == "far"
    remote = httpx.get(f"http://{address}:{bound_to_every_address}/v1/models", timeout=10)
    assert remote.status_code == 401 and "loopback" in remote.json()["message"]


def test_the_admin_api_is_closed_without_keys(bound_to_every_address: int) -> None:
    response = httpx.get(f"http://127.0.0.1:{bound_to_every_address}/admin/projects", timeout=10)
    assert response.status_code == 403 and "CLI" in response.json()["message"]
