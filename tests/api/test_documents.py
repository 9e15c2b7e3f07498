"""Documents over HTTP: `/v1/files`, `/v1/documents/search` and documents in chat calls, on a real server
serving SmolLM2 and the all-MiniLM-L6-v2 embedder, driven by raw HTTP and the `openai` and `mistralai` SDKs."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fpdf import FPDF
from mistralai.client import Mistral

from tests.conftest import RunningServer, create_key, start_server, stop_server
from tests.documents.long_pdf import make_long_pdf

EMBEDDER = "all-minilm-l6-v2"
CHAT_MODEL = "smollm2-135m-instruct"
MAX_FILE_BYTES = 3 * 1024 * 1024

CANTEEN = b"""# Canteen

The canteen on the ground floor opens at 11:30 and closes at 14:00. Vegetarian dishes are served every day.
"""
PARKING = b"""Parking

Staff park in the underground car park, levels -1 and -2. Visitors use the outdoor car park by the gate.
"""
BADGES = b"""<html><head><title>Security</title><script>var tracking = 1;</script></head><body>
<h1>Security desk</h1>
<p>Lost badges are replaced at the badge office in building C, room 214. A replacement badge costs 15 euros.</p>
<nav>Home | Contact</nav></body></html>"""


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"GALERNE_MODELS": f"{CHAT_MODEL},{EMBEDDER}", "GALERNE_MAX_FILE_BYTES": str(MAX_FILE_BYTES)}
    running = start_server(tmp_path_factory.mktemp("galerne-docs"), env=env)
    yield running
    stop_server(running)


def upload(server: RunningServer, name: str, data: bytes, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else server.headers
    return httpx.post(
        f"{server.base_url}/v1/files",
        files={"file": (name, data)},
        data={"purpose": "documents"},
        headers=headers,
        timeout=600,
    )


def uploaded(server: RunningServer, name: str, data: bytes) -> dict[str, Any]:
    response = upload(server, name, data)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def three_files(docs_server: RunningServer) -> list[dict[str, Any]]:
    return [
        uploaded(docs_server, "canteen.md", CANTEEN),
        uploaded(docs_server, "parking.txt", PARKING),
        uploaded(docs_server, "security.html", BADGES),
    ]


def test_an_upload_is_listed_read_downloaded_and_deleted(docs_server: RunningServer) -> None:
    stored = uploaded(docs_server, "notes.md", CANTEEN)
    assert stored["object"] == "file" and stored["status"] == "processed" and stored["bytes"] == len(CANTEEN)
    assert stored["num_chunks"] >= 1 and stored["purpose"] == "documents"
    assert stored["id"] in [item["id"] for item in docs_server.get("/v1/files").json()["data"]]
    assert docs_server.get(f"/v1/files/{stored['id']}").json()["filename"] == "notes.md"
    assert docs_server.get(f"/v1/files/{stored['id']}/content").content == CANTEEN
    deleted = httpx.delete(f"{docs_server.base_url}/v1/files/{stored['id']}", headers=docs_server.headers)
    assert deleted.json() == {"id": stored["id"], "object": "file", "deleted": True}
    assert docs_server.get(f"/v1/files/{stored['id']}").status_code == 404


def test_search_ranks_passages_across_files(docs_server: RunningServer, three_files: list[dict[str, Any]]) -> None:
    ids = [stored["id"] for stored in three_files]
    for mode in ("hybrid", "dense", "lexical"):
        body = {"query": "Where do I get a new badge?", "file_ids": ids, "limit": 3, "mode": mode}
        hits = docs_server.post("/v1/documents/search", json=body).json()["data"]
        assert hits[0]["file_id"] == ids[2], mode
        assert "room 214" in hits[0]["text"] and "tracking" not in hits[0]["text"]


def test_a_chat_over_three_documents_answers_from_the_third_and_cites_it(
    docs_server: RunningServer, three_files: list[dict[str, Any]]
) -> None:
    content = [{"type": "text", "text": "In which room is the badge office?"}]
    content += [{"type": "file", "file_id": stored["id"]} for stored in three_files]
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 40}
    reply = docs_server.post("/v1/chat/completions", json=body, timeout=120).json()
    assert "214" in reply["choices"][0]["message"]["content"]
    assert reply["references"][0]["file_id"] == three_files[2]["id"]
    assert reply["references"][0]["filename"] == "security.html"
    assert "room 214" in reply["references"][0]["text"]


def test_sdks_upload_and_chat_with_documents(docs_server: RunningServer, three_files: list[dict[str, Any]]) -> None:
    client = openai.OpenAI(base_url=f"{docs_server.base_url}/v1", api_key=docs_server.api_key, max_retries=0)
    created = client.files.create(file=("more.md", io.BytesIO(PARKING)), purpose="user_data")
    assert created.id and created.filename == "more.md"
    question: Any = [
        {"type": "text", "text": "Where do visitors park?"},
        {"type": "file", "file": {"file_id": created.id}},
    ]
    completion = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=30
    )
    assert completion.model_extra is not None and completion.model_extra["references"][0]["file_id"] == created.id
    mistral = Mistral(api_key=docs_server.api_key, server_url=docs_server.base_url)
    listed = mistral.files.list()
    assert created.id in [item.id for item in listed.data]
    uploaded_by_mistral = mistral.files.upload(file={"file_name": "canteen.md", "content": CANTEEN})
    answer = mistral.chat.complete(
        model=CHAT_MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "When does the canteen open?"},
                    {"type": "file", "file_id": uploaded_by_mistral.id},
                ],
            }
        ],
        temperature=0,
        max_tokens=30,
    )
    assert answer.choices[0].message.content


def test_inline_documents_are_read_and_not_kept(docs_server: RunningServer) -> None:
    before = len(docs_server.get("/v1/files").json()["data"])
    data_url = "data:text/html;base64," + base64.b64encode(BADGES).decode()
    content = [
        {"type": "text", "text": "How much does a replacement badge cost?"},
        {"type": "document_url", "document_url": data_url, "document_name": "security.html"},
    ]
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 30}
    reply = docs_server.post("/v1/chat/completions", json=body, timeout=120).json()
    assert reply["references"][0]["filename"] == "security.html"
    assert len(docs_server.get("/v1/files").json()["data"]) == before


def test_a_200_page_pdf_answers_through_retrieval(docs_server: RunningServer, tmp_path: Path) -> None:
    long_pdf = make_long_pdf(tmp_path / "harbour-log.pdf", pages=200)
    stored = uploaded(docs_server, long_pdf.path.name, long_pdf.path.read_bytes())
    assert stored["num_pages"] == 200 and stored["num_tokens"] > 4096  # far more than SmolLM2's context
    content = [{"type": "text", "text": long_pdf.question}, {"type": "file", "file_id": stored["id"]}]
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 40,
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{docs_server.base_url}/v1/chat/completions", json=body, headers=docs_server.headers, timeout=300
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    first = httpx.Response(200, content=lines[0].removeprefix("data: ")).json()
    pages = [reference["page_start"] for reference in first["references"]]
    assert long_pdf.fact_page in pages[:3]
    assert any(long_pdf.answer in reference["text"] for reference in first["references"])


@pytest.mark.parametrize(
    ("name", "data", "status", "needle"),
    [
        ("tool.exe", b"MZ\x90\x00binary", 400, "type"),
        ("empty.txt", b"", 400, "empty"),
        ("blank.md", b"   \n\n  ", 400, "text"),
        ("fake.pdf", b"this is not a pdf", 400, "pdf"),
        ("huge.txt", b"a" * (MAX_FILE_BYTES + 1), 413, "limit"),
    ],
)
def test_bad_uploads_are_clear_4xx_and_store_nothing(
    docs_server: RunningServer, name: str, data: bytes, status: int, needle: str
) -> None:
    before = docs_server.get("/v1/files").json()["data"]
    response = upload(docs_server, name, data)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["object"] == "error" and needle in error["message"].lower()
    assert docs_server.get("/v1/files").json()["data"] == before


def test_a_pdf_without_a_text_layer_is_refused(docs_server: RunningServer) -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 50, style="F")  # what a scan is to a text extractor: marks, no text
    response = upload(docs_server, "scan.pdf", bytes(pdf.output()))
    assert response.status_code == 400 and "text layer" in response.json()["message"]


def test_unknown_and_foreign_ids_are_404_before_any_decoding(
    docs_server: RunningServer, three_files: list[dict[str, Any]]
) -> None:
    other_key = create_key(docs_server.home, project="other", env=docs_server.env)
    other = {"Authorization": f"Bearer {other_key}"}
    mine = three_files[0]["id"]
    assert httpx.get(f"{docs_server.base_url}/v1/files/{mine}", headers=other).status_code == 404
    assert httpx.delete(f"{docs_server.base_url}/v1/files/{mine}", headers=other).status_code == 404
    listed = httpx.get(f"{docs_server.base_url}/v1/files", headers=other).json()["data"]
    assert mine not in [item["id"] for item in listed]
    for file_id in (mine, "00000000-0000-0000-0000-000000000000"):
        content = [{"type": "text", "text": "Summarise"}, {"type": "file", "file_id": file_id}]
        body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 5}
        response = httpx.post(f"{docs_server.base_url}/v1/chat/completions", json=body, headers=other, timeout=60)
        assert response.status_code == 404 and response.json()["param"] == "file_id"
    usage = docs_server.cli("usage", "--project", "other")
    assert not usage or all(row.get("completion_tokens", 0) == 0 for row in usage)


def test_an_upload_refused_half_way_leaves_nothing(docs_server: RunningServer) -> None:
    """The text is extracted and chunked, then embedding it is over the project's tokens/min: nothing stays."""
    key = create_key(docs_server.home, project="tight", env=docs_server.env, tpm="50")
    response = upload(docs_server, "parking.txt", PARKING * 40, key=key)
    assert response.status_code == 429, response.text
    listed = httpx.get(f"{docs_server.base_url}/v1/files", headers={"Authorization": f"Bearer {key}"}).json()
    assert listed["data"] == []


def test_embedding_and_chat_models_refuse_each_other(docs_server: RunningServer) -> None:
    chat_on_embedder = {"model": EMBEDDER, "messages": [{"role": "user", "content": "hi"}]}
    assert docs_server.post("/v1/chat/completions", json=chat_on_embedder).status_code == 400
    embed_on_chat = {"model": CHAT_MODEL, "input": "hi"}
    assert docs_server.post("/v1/embeddings", json=embed_on_chat).status_code == 400
