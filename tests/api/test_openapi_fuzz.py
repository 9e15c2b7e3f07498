"""Schemathesis over `/openapi.json`, as a hostile client would: valid and invalid bodies, parameters and
boundary values for every operation, against a real server on the bundled model, with a project key and
with an admin key.

Every answer must be a non-5xx the document lists, with the content type and body shape it documents.
The run is bounded and deterministic (fixed examples per operation, derandomised), and chat calls are
cut to a few tokens, so the module takes a few minutes on 2 cores; `GALERNE_FUZZ_EXAMPLES` raises the
number of generated cases per operation for a longer run by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from galerne.api.app import create_app
from galerne.catalog import EMBEDDING_MODEL_ID, builtin_entry, default_catalog
from galerne.config import Settings
from tests.conftest import RunningServer, start_server, stop_server

MAX_EXAMPLES = int(os.environ.get("GALERNE_FUZZ_EXAMPLES", "100"))
MAX_TOKENS = 2  # the model's words are not what is tested here; a short reply keeps the run fast
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CHAT = "/v1/chat/completions"
GENERATING = {CHAT, "/v1/completions", "/v1/fim/completions"}
MODEL = default_catalog().default_entry().id
EMBEDDINGS = "/v1/embeddings"
EMBEDDING_MODEL = builtin_entry(EMBEDDING_MODEL_ID).id

# The document is built from the app at collection (building it starts nothing), because schemathesis's
# fixture-based loader does not run under pytest 9.2; `test_the_served_document_is_the_one_fuzzed`
# checks that the server serves this very document at /openapi.json.
DOCUMENT = create_app(Settings(), default_catalog()).openapi()


def _generation(max_examples: int) -> dict[str, object]:
    return {
        "mode": "all",  # schema-valid and schema-breaking cases
        "max-examples": max_examples,
        "deterministic": True,
        "database": "none",
    }


schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {
            "request-timeout": 120,
            "generation": _generation(MAX_EXAMPLES),
            # Text completion reaches the engine like chat, through the same admission and validation: a quarter
            # of the cases keeps the run within CI's budget (each one prefills its prompt).
            "operations": [{"include-path": "/v1/completions", "generation": _generation(max(1, MAX_EXAMPLES // 4))}],
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    models = f"{MODEL},{EMBEDDING_MODEL}"  # the embedding model too, so /v1/embeddings cases reach its engine
    running = start_server(tmp_path_factory.mktemp("fuzz"), env={"GALERNE_MODELS": models})
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def admin_key(fuzz_server: RunningServer) -> str:
    return str(fuzz_server.cli("keys", "create", "--admin")["key"])


def _call_and_validate(case: schemathesis.Case, server: RunningServer, key: str) -> None:
    if case.operation.path in GENERATING and isinstance(case.body, dict):
        case.body["max_tokens"] = MAX_TOKENS
        case.body.pop("max_completion_tokens", None)
        if isinstance(case.body.get("model"), str):
            case.body["model"] = MODEL  # a random name stops at the 404; the real one reaches the engine
    if case.operation.path == EMBEDDINGS and isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = EMBEDDING_MODEL
    case.call_and_validate(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)


def test_the_served_document_is_the_one_fuzzed(fuzz_server: RunningServer) -> None:
    assert httpx.get(f"{fuzz_server.base_url}/openapi.json").json() == DOCUMENT


@schema.parametrize()
def test_project_key_gets_no_5xx_and_only_documented_answers(
    case: schemathesis.Case, fuzz_server: RunningServer
) -> None:
    _call_and_validate(case, fuzz_server, fuzz_server.api_key)


@schema.parametrize()
def test_admin_key_gets_no_5xx_and_only_documented_answers(
    case: schemathesis.Case, fuzz_server: RunningServer, admin_key: str
) -> None:
    _call_and_validate(case, fuzz_server, admin_key)
