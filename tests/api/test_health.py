"""`/health`: part health for anyone, model ids only for a valid key and only those it may use; 503 naming the
part that is down, here the database, cut through a real TCP proxy in front of PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import RunningServer, create_key, start_server, stop_server
from tests.databases import fresh_database_url
from tests.proxy import TcpProxy, running_proxy

ALL_UP = {"status": "ok", "database": "ok", "limit_store": "ok", "engines": "ok", "down": []}


def test_health_without_a_valid_key_names_no_model(server: RunningServer, model_id: str) -> None:
    for headers in ({}, {"Authorization": "Bearer gal-000000000000.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}):
        reply = httpx.get(f"{server.base_url}/health", headers=headers, timeout=10)
        assert reply.status_code == 200 and reply.json() == ALL_UP
        assert model_id not in reply.text


def test_health_with_a_key_shows_the_load_of_each_model(server: RunningServer, model_id: str) -> None:
    reply = server.get("/health")
    assert reply.status_code == 200
    load = reply.json()["models"][model_id]
    assert load["status"] == "ok" and set(load) == {"status", "queued", "active", "slots"} and load["slots"] >= 1


@pytest.fixture(scope="module")
def postgres_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TcpProxy, str]]:
    """A fresh PostgreSQL database reached through a proxy the test can cut: (proxy, URL through it)."""
    with fresh_database_url("postgresql", tmp_path_factory.mktemp("pg")) as url, \
            running_proxy("127.0.0.1", 5432) as proxy:
        yield proxy, url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


@pytest.fixture(scope="module")
def gateway(
    postgres_proxy: tuple[TcpProxy, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("health")
    config = home / "catalogue.toml"
    config.write_text(
        '[[models]]\nid = "far"\nengine = "remote"\nbase_url = "http://127.0.0.1:9/v1"\n\n'
        '[[models]]\nid = "hidden"\nengine = "remote"\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    env = {"GALERNE_CONFIG": str(config), "GALERNE_DATABASE_URL": postgres_proxy[1], "GALERNE_KEY_CACHE_SECONDS": "0"}
    running = start_server(home, env=env)
    yield running
    stop_server(running)


def test_a_key_sees_only_the_models_its_project_may_use(gateway: RunningServer) -> None:
    key = create_key(gateway.home, project="narrow", env=gateway.env, models="far")
    admin = gateway.cli("keys", "create", "--admin")["key"]
    narrow = gateway.get("/health", headers={"Authorization": f"Bearer {key}"}).json()
    assert list(narrow["models"]) == ["far"] and "hidden" not in str(narrow)
    everything = gateway.get("/health", headers={"Authorization": f"Bearer {admin}"}).json()
    assert sorted(everything["models"]) == ["far", "hidden"]


def test_an_unreachable_database_is_named_by_health_and_refused_without_its_address(
    gateway: RunningServer, postgres_proxy: tuple[TcpProxy, str]
) -> None:
    proxy = postgres_proxy[0]
    proxy.cut()
    try:
        health = gateway.get("/health")
        assert health.status_code == 503
        assert health.json() == {**ALL_UP, "status": "unavailable", "database": "down", "down": ["database"]}
        assert "models" not in health.json()  # the key cannot be checked without the database
        refused = gateway.post("/v1/chat/completions", json={"model": "far", "messages": [{"role": "user",
                                                                                           "content": "Hi"}]})
        assert refused.status_code == 503 and refused.json()["code"] == "database_unavailable"
        assert str(proxy.port) not in refused.text and "127.0.0.1" not in refused.text
        assert f"127.0.0.1:{proxy.port}" in gateway.log()  # the operator is told where
    finally:
        proxy.restore()
    assert gateway.get("/health").status_code == 200
