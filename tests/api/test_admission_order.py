"""Cheap refusals come before expensive work: a project over its limit is refused before its prompt is read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import RunningServer, create_key, start_server, stop_server


@pytest.fixture(scope="module")
def one_per_minute(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("one-per-minute")
    running = start_server(home, api_key=create_key(home, project="slow", rpm="1"))
    yield running
    stop_server(running)


def test_a_project_out_of_requests_is_refused_before_its_huge_prompt_is_tokenized(
    one_per_minute: RunningServer,
) -> None:
    model = one_per_minute.get("/v1/models").json()["data"][0]["id"]
    small = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert one_per_minute.post("/v1/chat/completions", json=small).status_code == 200
    # ~1.5 MB: far past the context. Before the fix it was tokenized first and answered
    # context_length_exceeded; the project has no request left, which is the answer it must get.
    huge = {**small, "messages": [{"role": "user", "content": "word " * 300_000}]}
    refused = one_per_minute.post("/v1/chat/completions", json=huge)
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "rate_limit_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1
    metrics = one_per_minute.get("/metrics").text
    assert 'code="rate_limit_exceeded"' in metrics
