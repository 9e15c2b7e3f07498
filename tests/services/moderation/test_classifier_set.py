"""The labelled moderation set is what the classifier's precision/recall table is computed from: its shape is
checked here, so a bad edit fails fast instead of skewing the table."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

SET_PATH = Path(__file__).parents[2] / "fixtures" / "moderation" / "classifier_set.jsonl"
CATEGORIES = {
    "sexual",
    "hate_and_discrimination",
    "violence_and_threats",
    "dangerous_and_criminal_content",
    "selfharm",
    "health",
    "financial",
    "law",
    "pii",
    "safe",
}


def test_the_classifier_set_covers_every_category_in_every_language() -> None:
    rows = [json.loads(line) for line in SET_PATH.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 180
    assert all(set(row) == {"lang", "text", "category"} for row in rows)
    assert {row["category"] for row in rows} == CATEGORIES
    per_category = Counter(row["category"] for row in rows)
    assert min(per_category.values()) >= 12, per_category
    assert per_category["safe"] >= 40
    per_language = Counter(row["lang"] for row in rows)
    assert set(per_language) == {"en", "fr", "de", "es", "it"}
    assert min(per_language.values()) >= 30, per_language
    assert {(row["lang"], row["category"]) for row in rows} == {(lang, c) for lang in per_language for c in CATEGORIES}
    assert len({row["text"] for row in rows}) == len(rows), "duplicate texts"
    assert all(0 < len(row["text"]) <= 200 for row in rows), "texts are one or two short sentences"
