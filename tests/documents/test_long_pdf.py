"""The 200-page PDF: its fact is on page 137 after extraction, lies in one passage, and the file is the same
on every run (the lead's retrieval test and the upload benchmark depend on both)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from galerne.documents import chunk, extract
from tests.documents.long_pdf import make_long_pdf


def test_two_hundred_pages_with_the_fact_on_page_137(tmp_path: Path) -> None:
    long = make_long_pdf(tmp_path / "harbour.pdf")
    assert (long.num_pages, long.fact_page) == (200, 137)
    document = extract(long.path.read_bytes(), long.path.name)
    assert document.num_pages == 200
    assert document.title == "Port of Lindmoor: harbour works log"
    assert {block.page for block in document.blocks} == set(range(1, 201))
    assert [block.page for block in document.blocks if long.answer in block.text] == [137]
    assert sum(block.kind == "heading" for block in document.blocks) == 220  # 20 parts, 200 weeks
    assert len(document.text.split()) > 50_000

    passages = chunk(document, max_tokens=200, count_tokens=lambda text: math.ceil(len(text.split()) * 1.4))
    [hit] = [piece for piece in passages if long.answer in piece.text]
    assert (hit.page_start, hit.page_end) == (137, 137)
    assert hit.heading_path[-1].startswith("Week 137: ")


def test_same_bytes_on_every_run(tmp_path: Path) -> None:
    first = make_long_pdf(tmp_path / "a.pdf", pages=30)
    second = make_long_pdf(tmp_path / "b.pdf", pages=30)
    assert first.fact_page == 21
    digest = [hashlib.sha256(long.path.read_bytes()).hexdigest() for long in (first, second)]
    assert digest[0] == digest[1]
