"""No admin call can lock every admin out, and the CLI brings an admin key back when keys lapse on their own.

The server serves one remote model whose upstream is never called, so it starts without loading weights.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, run_cli, start_server, stop_server


def remote_only_env(home: Path) -> dict[str, str]:
    config = home / "catalogue.toml"
    config.write_text('[[models]]\nid = "far"\nengine = "remote"\nbase_url = "http://127.0.0.1:9/v1"\n')
    return {"GALERNE_CONFIG": str(config), "GALERNE_KEY_CACHE_SECONDS": "0"}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path, env=remote_only_env(tmp_path))
    yield running
    stop_server(running)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def patch(server: RunningServer, path: str, body: dict[str, object], key: str) -> httpx.Response:
    return httpx.patch(f"{server.base_url}{path}", json=body, headers=bearer(key), timeout=30)


def test_the_admin_api_refuses_to_lock_out_its_last_admin(gateway: RunningServer) -> None:
    admin = gateway.cli("keys", "create", "--admin")
    key = admin["key"]
    for body in ({"expires_at": "2000-01-01T00:00:00Z"}, {"is_disabled": True}):
        refused = patch(gateway, "/admin/projects/admin", body, key)
        assert refused.status_code == 409, refused.text
        error = refused.json()
        assert error["object"] == "error" and error["code"] == "would_lock_out_admins"
        assert "no admin key would work" in error["message"] and "--admin --project" in error["message"]
    refused = httpx.delete(f"{gateway.base_url}/admin/keys/{admin['id']}", headers=bearer(key), timeout=30)
    assert refused.status_code == 409 and refused.json()["code"] == "would_lock_out_admins"
    assert gateway.get("/admin/projects", headers=bearer(key)).status_code == 200  # still in
    later = (datetime.now(UTC) + timedelta(days=90)).isoformat()
    assert patch(gateway, "/admin/projects/admin", {"expires_at": later}, key).status_code == 200

    assert gateway.post("/admin/projects", json={"name": "ops"}, headers=bearer(key)).status_code == 201
    other = gateway.post("/admin/keys", json={"project": "ops", "is_admin": True}, headers=bearer(key)).json()
    assert patch(gateway, "/admin/projects/admin", {"is_disabled": True}, key).status_code == 200
    assert gateway.get("/admin/projects", headers=bearer(key)).status_code == 401  # this key's project is off
    assert patch(gateway, "/admin/projects/ops", {"is_disabled": True}, other["key"]).status_code == 409
    assert gateway.get("/admin/keys", headers=bearer(other["key"])).status_code == 200


def test_the_cli_refuses_too_and_restores_an_admin_key_after_a_lockout(gateway: RunningServer) -> None:
    key = gateway.cli("keys", "create", "--admin")["key"]
    with pytest.raises(RuntimeError, match="no admin key would work"):
        gateway.cli("projects", "update", "admin", "--expires", "2000-01-01")
    # Far enough ahead that the CLI (a new process, slow on a loaded machine) still runs before it.
    soon = (datetime.now(UTC) + timedelta(seconds=12)).strftime("%Y-%m-%dT%H:%M:%S")
    gateway.cli("projects", "update", "admin", "--expires", soon)  # allowed: the key works until then
    deadline = time.monotonic() + 60
    while (locked_out := gateway.get("/admin/projects", headers=bearer(key))).status_code == 200:
        assert time.monotonic() < deadline, "the admin project never expired"
        time.sleep(0.5)
    assert locked_out.status_code == 401 and "expired" in locked_out.json()["message"]

    with pytest.raises(RuntimeError, match="--enable --unset expires"):
        gateway.cli("keys", "create", "--admin")  # a key in an expired project would not work
    gateway.cli("projects", "update", "admin", "--enable", "--unset", "expires")  # the recovery path
    assert gateway.get("/admin/projects", headers=bearer(key)).status_code == 200
    fresh = gateway.cli("keys", "create", "--admin")["key"]  # e.g. when the old key's secret is lost
    assert gateway.get("/admin/projects", headers=bearer(fresh)).status_code == 200


def test_a_start_without_a_working_admin_key_says_how_to_make_one(tmp_path: Path) -> None:
    env = remote_only_env(tmp_path)
    run_cli(tmp_path, "keys", "create", "--admin", "--expires", "2001-01-01", env=env)
    server = start_server(tmp_path, env=env)
    try:
        assert "No admin key works" in server.log() and "galerne keys create --admin" in server.log()
    finally:
        stop_server(server)
