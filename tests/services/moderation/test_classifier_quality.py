"""The moderation classifier on the labelled multilingual set (`tests/fixtures/moderation/classifier_set.jsonl`),
through the same in-process services the API uses, on the bundled model.

The per-category precision/recall table in docs/moderation.md comes from here:

    .venv/bin/python -m tests.services.moderation.test_classifier_quality [smollm2-135m-instruct|gemma3-270m]

A text is predicted as the answer the classifier finds most likely (one of the nine categories, or "safe").
The numbers are a small model's: the test holds the floor measured for it, so a change that makes the
classifier worse (a broken prompt, scores no longer normalised, answers misread) fails here.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from galerne.catalog import builtin_catalog
from galerne.config import Settings
from galerne.evals.runtime import eval_runtime
from galerne.inference.types import ChatMessage, Role
from galerne.moderation_categories import Category
from galerne.services.moderation.classifier import ModerationClassifier

SET_PATH = Path(__file__).parents[2] / "fixtures" / "moderation" / "classifier_set.jsonl"
SAFE = "safe"
LABELS = [*(category.value for category in Category), SAFE]


def load_set() -> list[dict[str, str]]:
    return [json.loads(line) for line in SET_PATH.read_text(encoding="utf-8").splitlines()]


async def predict(model: str, rows: list[dict[str, str]], *, in_flight: int = 4) -> list[dict[str, float]]:
    """Each text's scores: the nine categories and "safe" (what they leave of 1)."""
    catalog = builtin_catalog((model,))
    with tempfile.TemporaryDirectory() as home:
        async with eval_runtime(Settings(home=Path(home)), catalog, model, project="moderation-quality") as runtime:
            classifier = ModerationClassifier(runtime.client.chat, catalog)
            gate = asyncio.Semaphore(in_flight)

            async def one(text: str) -> dict[str, float]:
                async with gate:
                    result = await classifier.classify([ChatMessage(Role.USER, text)], runtime.client.principal)
                scores = {category.value: score for category, score in result.scores.items()}
                scores[SAFE] = max(0.0, 1.0 - sum(scores.values()))
                return scores

            return list(await asyncio.gather(*(one(row["text"]) for row in rows)))


def quality(rows: list[dict[str, str]], scores: list[dict[str, float]]) -> dict[str, Any]:
    """Per label: precision, recall and support; plus accuracy and macro recall."""
    predicted = [max(score, key=score.__getitem__) for score in scores]
    truth = [row["category"] for row in rows]
    table = {}
    for label in LABELS:
        hits = sum(p == t == label for p, t in zip(predicted, truth, strict=True))
        said = sum(p == label for p in predicted)
        support = sum(t == label for t in truth)
        table[label] = {
            "precision": hits / said if said else 0.0,
            "recall": hits / support if support else 0.0,
            "support": support,
            "predicted": said,
        }
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(rows)
    macro_recall = sum(entry["recall"] for entry in table.values()) / len(LABELS)
    harmful = [i for i, t in enumerate(truth) if t != SAFE]
    harmful_caught = sum(predicted[i] != SAFE for i in harmful) / len(harmful)
    return {"labels": table, "accuracy": accuracy, "macro_recall": macro_recall, "harmful_caught": harmful_caught,
            "per_language": _per_language(rows, predicted)}


def _per_language(rows: list[dict[str, str]], predicted: list[str]) -> dict[str, float]:
    totals: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for row, label in zip(rows, predicted, strict=True):
        totals[row["lang"]] += 1
        right[row["lang"]] += label == row["category"]
    return {lang: right[lang] / totals[lang] for lang in sorted(totals)}


def markdown(model: str, result: dict[str, Any]) -> str:
    lines = [f"**{model}** — accuracy {result['accuracy']:.2f}, macro recall {result['macro_recall']:.2f}, "
             f"harmful texts not called safe {result['harmful_caught']:.2f}; accuracy by language: "
             + ", ".join(f"{lang} {value:.2f}" for lang, value in result["per_language"].items()),
             "", "| category | precision | recall | texts | predicted |", "|---|---|---|---|---|"]
    for label, entry in result["labels"].items():
        lines.append(f"| {label} | {entry['precision']:.2f} | {entry['recall']:.2f} | {entry['support']} | "
                     f"{entry['predicted']} |")
    return "\n".join(lines)


def test_the_bundled_classifier_beats_chance_on_the_labelled_set() -> None:
    rows = load_set()
    scores = asyncio.run(predict("smollm2-135m-instruct", rows))
    for score in scores:
        assert set(score) == set(LABELS) and abs(sum(score.values()) - 1.0) < 1e-6
        assert all(0.0 <= value <= 1.0 for value in score.values())
    result = quality(rows, scores)
    print(markdown("smollm2-135m-instruct", result))
    # Ten answers: a constant or random classifier has a macro recall of 0.10. Measured here: see docs.
    assert result["macro_recall"] >= 0.15, result
    assert result["labels"]["sexual"]["precision"] >= 0.5, result["labels"]["sexual"]


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m-instruct"
    labelled = load_set()
    print(markdown(name, quality(labelled, asyncio.run(predict(name, labelled)))))
