"""The retrieval set's shape (issue 13's "Done when"): ≥ 8 documents in ≥ 4 languages, ≥ 60 questions, ≥ 10
asked in another language than their document, and every answer snippet present exactly once in its
document's extracted text and whole inside one passage, so that a hit can be checked whatever the ranking.

Documents are named `<name>_<language>.<ext>`; the .pdf and .docx ones are generated from
`sources/<name>_<language>.<ext>.md` by `python -m tests.documents.make_fixtures`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from galerne.documents import Document, chunk, extract
from tests.documents.make_fixtures import FIXTURES, SOURCES, generated, read_source

LANGUAGES = ("en", "fr", "de", "es", "it")
FORMATS = (".md", ".txt", ".html", ".pdf", ".docx")


@cache
def document(name: str) -> Document:
    return extract((FIXTURES / name).read_bytes(), name)


def documents() -> list[str]:
    return sorted(path.name for path in FIXTURES.iterdir() if path.suffix in FORMATS)


def language_of(name: str) -> str:
    return Path(name).stem.rpartition("_")[2]


def questions() -> list[dict[str, str]]:
    with (FIXTURES / "questions.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def test_documents_cover_languages_and_formats() -> None:
    names = documents()
    assert len(names) >= 8
    per_language = Counter(language_of(name) for name in names)
    assert set(per_language) <= set(LANGUAGES) and len(per_language) >= 4
    assert sum(count >= 2 for count in per_language.values()) >= 2
    assert {Path(name).suffix for name in names} == set(FORMATS)
    for name in names:
        words = len(document(name).text.split())
        assert 400 <= words <= 2_500, f"{name} has {words} words: a document of substance is 1-4 pages"


def test_questions_shape() -> None:
    rows = questions()
    assert len(rows) >= 60
    names = set(documents())
    for row in rows:
        assert set(row) == {"question", "language", "document", "answer"}, row
        assert row["document"] in names and row["language"] in LANGUAGES, row
        assert 0 < len(row["answer"]) < 80, row
        assert row["answer"] not in row["question"], row  # not a copy of the passage's words
    assert len({row["question"] for row in rows}) == len(rows)
    assert sum(row["language"] != language_of(row["document"]) for row in rows) >= 10
    per_language = Counter(row["language"] for row in rows)
    assert set(per_language) == set(LANGUAGES) and min(per_language.values()) >= 8
    per_document = Counter(row["document"] for row in rows)
    assert set(per_document) == names and min(per_document.values()) >= 5


def test_every_answer_is_in_its_document_once() -> None:
    for row in questions():
        text = document(row["document"]).text
        assert text.count(row["answer"]) == 1, row
        assert all(row["answer"] not in document(other).text for other in documents() if other != row["document"])
        assert any(row["answer"] in block.text for block in document(row["document"]).blocks), row


@pytest.mark.parametrize("max_tokens", [128, 200])
def test_every_answer_lies_within_one_passage(max_tokens: int) -> None:
    def count(text: str) -> int:  # about a WordPiece tokenizer's count (see test_chunking)
        return math.ceil(len(text.split()) * 1.4)

    passages = {name: chunk(document(name), max_tokens=max_tokens, count_tokens=count) for name in documents()}
    for row in questions():
        assert any(row["answer"] in piece.text for piece in passages[row["document"]]), row


def test_generated_documents_match_their_sources() -> None:
    """Regenerating gives the same text, and the PDF/DOCX text is the source's text (extraction round-trips)."""
    for name, data in generated().items():
        committed = document(name)
        again = extract(data, name)
        assert again.text == committed.text and again.title == committed.title, name
        source = read_source(f"{name}.md")
        assert committed.title == source.title
        source_blocks = source.blocks[1:] if name.endswith(".docx") else source.blocks  # the title is a style there
        assert [(b.kind, b.text) for b in committed.blocks] == [(b.kind, b.text) for b in source_blocks], name
    assert len(list(SOURCES.glob("*.md"))) == len([n for n in documents() if n.endswith((".pdf", ".docx"))])
