"""Catalogue deployments: a model on several engines, and the one-engine form kept as one deployment."""

from __future__ import annotations

from pathlib import Path

import pytest

from galerne.catalog import Catalog, ModelEntry, load_catalog
from galerne.errors import ConfigurationError

TWO_DEPLOYMENTS = """
[[models]]
id = "mixtral"
context_length = 32768
max_failures = 2

[[models.deployments]]
name = "gpu-a"
engine = "vllm"
base_url = "http://127.0.0.1:8001/v1"
weight = 2
max_in_flight = 128

[[models.deployments]]
engine = "remote"
base_url = "https://api.mistral.ai/v1"
upstream_model = "open-mixtral-8x7b"
dialect = "mistral"
api_key_file = "/run/secrets/mistral"
"""


def test_a_model_lists_its_deployments_with_weights_and_names(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(TWO_DEPLOYMENTS)
    [entry] = load_catalog(path).models
    first, second = entry.all_deployments()
    assert (first.name, first.engine, first.weight, first.max_in_flight) == ("gpu-a", "vllm", 2.0, 128)
    assert (second.name, second.dialect, second.api_key_file) == ("remote-1", "mistral", "/run/secrets/mistral")
    assert entry.max_failures == 2 and not entry.is_embedded_somewhere()


def test_a_one_engine_model_is_one_deployment() -> None:
    entry = ModelEntry(id="far", engine="remote", base_url="http://up/v1", max_concurrent_requests=9, timeout_seconds=3)
    [deployment] = entry.all_deployments()
    assert (deployment.name, deployment.engine, deployment.base_url) == ("remote-0", "remote", "http://up/v1")
    assert (deployment.max_in_flight, deployment.timeout_seconds) == (9, 3)


def test_embedded_gpu_placement_is_read(tmp_path: Path) -> None:
    entry = ModelEntry(id="m", gguf="/models/m.gguf", gpu_layers=-1, split_mode="row", tensor_split=(3, 1))
    [deployment] = entry.all_deployments()
    assert (deployment.gpu_layers, deployment.split_mode, deployment.tensor_split) == (-1, "row", (3.0, 1.0))


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ({"base_url": "http://x/v1", "deployments": [{"engine": "remote", "base_url": "http://y/v1"}]},
         "move base_url into its deployments"),
        ({"deployments": [{"engine": "vllm"}]}, "a vllm model needs `base_url`"),
        ({"deployments": [{"engine": "embedded"}]}, "an embedded model needs `gguf`"),
        ({"deployments": [{"name": "a", "engine": "remote", "base_url": "http://y/v1"},
                          {"name": "a", "engine": "remote", "base_url": "http://z/v1"}]}, "must be unique"),
        ({"engine": "remote", "base_url": "http://y/v1", "api_key_env": "K", "api_key_file": "/k"}, "not both"),
        ({"deployments": [{"engine": "remote", "base_url": "http://y/v1", "weight": 0}]}, "greater than 0"),
    ],
)
def test_bad_deployments_are_refused_with_a_reason(model: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Catalog.model_validate({"models": [{"id": "m", **model}]})


def test_a_bad_deployment_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(TWO_DEPLOYMENTS.replace('weight = 2', 'weight = -1'))
    with pytest.raises(ConfigurationError, match=r"catalogue\.toml is invalid"):
        load_catalog(path)
