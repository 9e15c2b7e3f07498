"""Top-3 recall of dense, lexical and hybrid retrieval on the multilingual retrieval set, over HTTP.

The set (`tests/fixtures/documents/`): documents in five languages and formats, and questions whose answer
is a verbatim snippet of one document, some asked in another language than their document. A question is
answered at k when one of the first k passages contains its snippet. The table in docs/documents.md
comes from here:

    .venv/bin/python -m tests.api.test_retrieval_quality
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server

SET_DIR = Path(__file__).parents[1] / "fixtures" / "documents"
MODES = ("dense", "lexical", "hybrid")
TOP_K = 3
HYBRID_FLOOR = 0.9
SERVER_ENV = {"GALERNE_MODELS": "smollm2-135m-instruct,all-minilm-l6-v2"}


def load_questions() -> list[dict[str, str]]:
    lines = (SET_DIR / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def document_language(question: dict[str, str]) -> str:
    """The set names documents `<topic>_<language>.<ext>`."""
    return question["document"].rsplit(".", 1)[0].rsplit("_", 1)[-1]


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def is_hit(answer: str, passages: list[dict[str, Any]]) -> bool:
    """The snippet lies within one of the passages (whitespace and case aside: PDF text reflows lines)."""
    needle = _normalised(answer)
    return any(needle in _normalised(passage["text"]) for passage in passages)


def measure(server: RunningServer) -> dict[str, Any]:
    """Upload every document of the set, ask every question in every mode; recall overall and per language."""
    questions = load_questions()
    file_ids: dict[str, str] = {}
    for name in sorted({question["document"] for question in questions}):
        response = httpx.post(
            f"{server.base_url}/v1/files",
            files={"file": (name, (SET_DIR / name).read_bytes())},
            headers=server.headers,
            timeout=600,
        )
        assert response.status_code == 200, f"{name}: {response.text}"
        file_ids[name] = response.json()["id"]
    hits: dict[str, list[bool]] = {mode: [] for mode in MODES}
    by_language: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {mode: [] for mode in MODES})
    misses: list[str] = []
    for question in questions:
        group = question["language"] if question["language"] == document_language(question) else "cross-language"
        for mode in MODES:
            body = {"query": question["question"], "file_ids": list(file_ids.values()), "limit": TOP_K, "mode": mode}
            response = server.post("/v1/documents/search", json=body)
            assert response.status_code == 200, response.text
            hit = is_hit(question["answer"], response.json()["data"])
            hits[mode].append(hit)
            by_language[group][mode].append(hit)
            if mode == "hybrid" and not hit:
                misses.append(f"{question['document']}: {question['question']}")
    return {
        "num_questions": len(questions),
        "num_documents": len(file_ids),
        "recall": {mode: sum(values) / len(values) for mode, values in hits.items()},
        "by_language": {
            group: {"n": len(modes["hybrid"]), **{mode: sum(v) / len(v) for mode, v in modes.items()}}
            for group, modes in sorted(by_language.items())
        },
        "hybrid_misses": misses,
    }


def markdown_table(result: dict[str, Any]) -> str:
    rows = ["| questions | n | dense | lexical | hybrid |", "|---|---|---|---|---|"]
    for group, scores in result["by_language"].items():
        rows.append(f"| {group} | {scores['n']} | " + " | ".join(f"{scores[m]:.2f}" for m in MODES) + " |")
    recall = result["recall"]
    rows.append(f"| **all** | {result['num_questions']} | " + " | ".join(f"**{recall[m]:.2f}**" for m in MODES) + " |")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def retrieval_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("galerne-retrieval"), env=SERVER_ENV)
    yield running
    stop_server(running)


def test_the_set_is_large_multilingual_and_crosses_languages() -> None:
    questions = load_questions()
    assert len(questions) >= 60
    assert len({question["document"] for question in questions}) >= 8
    assert len({question["language"] for question in questions}) >= 4


@pytest.mark.timeout(1200)
def test_hybrid_retrieval_finds_the_passage_in_its_top_three(retrieval_server: RunningServer) -> None:
    result = measure(retrieval_server)
    print("\n" + markdown_table(result))
    recall = result["recall"]
    assert recall["hybrid"] >= HYBRID_FLOOR, result["hybrid_misses"]
    # fusion must earn its keep: not worse than either ranking alone
    assert recall["hybrid"] >= max(recall["dense"], recall["lexical"]) - 0.02, recall


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        server = start_server(Path(home), env=SERVER_ENV)
        try:
            outcome = measure(server)
        finally:
            stop_server(server)
    print(markdown_table(outcome))
    print("\nhybrid misses:", *outcome["hybrid_misses"], sep="\n  ", file=sys.stderr)
