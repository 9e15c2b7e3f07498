#!/usr/bin/env python
"""Extraction and chunking time for a 200-page PDF and for the retrieval set, against pypdf's plain text.

    python benchmarks/bench_extraction.py                  # 200 pages, best of 3, max_tokens 200
    python benchmarks/bench_extraction.py --pages 500 --repeat 1

The PDF is `tests/documents/long_pdf.make_long_pdf` (deterministic prose, a heading on every page). The
baseline, measured in the same run on the same bytes, is pypdf's `extract_text()` on every page: the text
alone, without the layout pass that rebuilds paragraphs, headings and pages (`galerne.documents.from_pdf`).
Token counts use words x 1.4 rounded up (about all-MiniLM-L6-v2's WordPiece count on English prose); the
caller's real tokenizer costs its own time on top, once per candidate passage.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pypdf import PdfReader

from galerne.documents import chunk, extract
from tests.documents.long_pdf import make_long_pdf

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "documents"


def count_tokens(text: str) -> int:
    return math.ceil(len(text.split()) * 1.4)


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("GALERNE_NUM_THREADS", "1")

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        long = make_long_pdf(Path(folder) / "long.pdf", pages=args.pages)
        generate_s = time.perf_counter() - start
        data = long.path.read_bytes()

    def baseline() -> str:
        return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)

    document = extract(data, "long.pdf")
    passages = chunk(document, max_tokens=args.max_tokens, count_tokens=count_tokens)
    baseline_s = best_of(args.repeat, baseline)
    extract_s = best_of(args.repeat, lambda: extract(data, "long.pdf"))
    chunk_s = best_of(args.repeat, lambda: chunk(document, max_tokens=args.max_tokens, count_tokens=count_tokens))
    words = len(document.text.split())
    print(
        f"{args.pages}-page PDF: {len(data) / 1e6:.2f} MB, {words:,} words, {len(document.blocks):,} blocks, "
        f"{len(passages):,} passages (max_tokens {args.max_tokens}); written in {generate_s:.2f} s"
    )
    print(f"  pypdf extract_text (baseline)  {baseline_s * 1000:8.0f} ms")
    print(f"  extract (structure, pages)     {extract_s * 1000:8.0f} ms   {extract_s / baseline_s:.2f}x baseline")
    print(f"  chunk                          {chunk_s * 1000:8.0f} ms")
    print(
        f"  extract + chunk                {(extract_s + chunk_s) * 1000:8.0f} ms   "
        f"{args.pages / (extract_s + chunk_s):.0f} pages/s"
    )

    print("retrieval set (best of repeats):")
    for path in sorted(FIXTURES.iterdir()):
        if path.suffix not in (".md", ".txt", ".html", ".pdf", ".docx"):
            continue
        raw = path.read_bytes()
        seconds = best_of(
            args.repeat,
            lambda raw=raw, name=path.name: chunk(  # type: ignore[misc]
                extract(raw, name), max_tokens=args.max_tokens, count_tokens=count_tokens
            ),
        )
        pieces = chunk(extract(raw, path.name), max_tokens=args.max_tokens, count_tokens=count_tokens)
        print(f"  {path.name:20} {len(raw) / 1024:7.1f} KiB  {len(pieces):3} passages  {seconds * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
