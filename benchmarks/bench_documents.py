"""Upload-to-searchable time of a 200-page PDF on a real `galerne serve`, against its floor measured in the
same run: extracting the text (pypdf, in-process) plus embedding the very same passages (chunked with the
embedding model's own tokenizer, as the server does) through `/v1/embeddings`. What is left is ours:
chunking, counting tokens, the database transaction, HTTP.

    .venv/bin/python benchmarks/bench_documents.py                 # 200 pages, 3 repeats
    .venv/bin/python benchmarks/bench_documents.py --pages 50 --repeats 5

"Searchable" means the upload's response came back (it is sent only once the chunks are stored) and a
search finds the page's fact.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from galerne.catalog import builtin_entry
from galerne.documents.chunking import chunk
from galerne.documents.extraction import extract
from galerne.engines.llamacpp.model import LlamaModel
from galerne.services.documents import CHUNK_TOKENS
from tests.conftest import start_server, stop_server
from tests.documents.long_pdf import make_long_pdf

EMBEDDER = "all-minilm-l6-v2"
EMBED_BATCH = 512  # /v1/embeddings' cap on inputs, as the upload path embeds


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):7.2f} s  (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        long_pdf = make_long_pdf(Path(home) / "harbour-log.pdf", pages=args.pages)
        pdf, data = long_pdf.path, long_pdf.path.read_bytes()
        tokenizer = LlamaModel(builtin_entry(EMBEDDER).gguf_path())  # the server's own word pieces
        count = partial(_count, tokenizer)
        server = start_server(Path(home) / "galerne", env={"GALERNE_MODELS": f"smollm2-135m-instruct,{EMBEDDER}"})
        try:
            uploads, extracts, embeds = [], [], []
            num_chunks = 0
            for _ in range(args.repeats):
                began = time.perf_counter()
                document = extract(data, pdf.name)
                extracts.append(time.perf_counter() - began)
                texts = [piece.text for piece in chunk(document, max_tokens=CHUNK_TOKENS, count_tokens=count)]
                began = time.perf_counter()
                for first in range(0, len(texts), EMBED_BATCH):
                    body = {"model": EMBEDDER, "input": texts[first : first + EMBED_BATCH]}
                    server.post("/v1/embeddings", json=body, timeout=600).raise_for_status()
                embeds.append(time.perf_counter() - began)
                began = time.perf_counter()
                files = {"file": (pdf.name, data)}
                url = f"{server.base_url}/v1/files"
                response = httpx.post(url, files=files, headers=server.headers, timeout=1800)
                response.raise_for_status()
                stored = response.json()
                search = {"query": long_pdf.question, "file_ids": [stored["id"]], "limit": 3}
                hits = server.post("/v1/documents/search", json=search).json()["data"]
                uploads.append(time.perf_counter() - began)
                assert any(long_pdf.answer in hit["text"] for hit in hits), "the fact is not found"
                num_chunks = stored["num_chunks"]
        finally:
            stop_server(server)
    floor = [extract_s + embed_s for extract_s, embed_s in zip(extracts, embeds, strict=True)]
    print(f"{args.pages}-page PDF, {len(data) / 1e6:.1f} MB, {num_chunks} passages")
    print(f"  extract (pypdf, in-process)          {spread(extracts)}")
    print(f"  embed the passages (/v1/embeddings)  {spread(embeds)}")
    print(f"  floor = extract + embed              {spread(floor)}")
    print(f"  upload to searchable (/v1/files)     {spread(uploads)}")
    print(f"  ratio upload / floor: {statistics.median(uploads) / statistics.median(floor):.2f}x")


def _count(tokenizer: LlamaModel, text: str) -> int:
    return len(tokenizer.tokenize(text, parse_special=False, add_bos=True))


if __name__ == "__main__":
    main()
