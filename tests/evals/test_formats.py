"""Readers, prompts, answer extraction and intervals, without a model."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from galerne.errors import EvalDataError
from galerne.evals.answers import completion_code, extract_number
from galerne.evals.formats import read_dataset
from galerne.evals.items import CodeItem, MultipleChoiceItem
from galerne.evals.prompts import MBPP_STOPS, multiple_choice_context, pick_examples, program_for
from galerne.evals.stats import bootstrap_interval, wilson_interval
from tests.evals.harness import FIXTURES


@pytest.mark.parametrize(
    ("task", "num_items", "languages"),
    [("mmlu", 10, {"en"}), ("arc", 8, {"en"}), ("hellaswag", 8, {"en"}), ("gsm8k", 4, {"en"}),
     ("humaneval", 4, {"en"}), ("mbpp", 4, {"en"}), ("m_mmlu", 20, {"en", "fr", "de", "es", "it"}),
     ("m_arc", 15, {"en", "fr", "de", "es", "it"}), ("m_hellaswag", 10, {"en", "fr", "de", "es", "it"})],
)
def test_every_fixture_set_reads(task: str, num_items: int, languages: set[str]) -> None:
    data = read_dataset(task, FIXTURES / task)
    assert len(data.items) == num_items
    assert {item.language for item in data.items} == languages


def test_mmlu_few_shot_comes_from_dev_and_lists_letters() -> None:
    data = read_dataset("mmlu", FIXTURES / "mmlu")
    item = data.items[0]
    assert isinstance(item, MultipleChoiceItem)
    shots = pick_examples(item, data.examples, 2, seed=1)
    assert shots == pick_examples(item, data.examples, 2, seed=1)  # reproducible
    assert all(shot.subject == item.subject and shot.id.endswith(("_dev/1", "_dev/2", "_dev/3", "_dev/4", "_dev/5"))
               for shot in shots)
    context = multiple_choice_context(item, shots)
    assert context.startswith("The following are multiple choice questions (with answers) about elementary")
    assert context.endswith("A. 10\nB. 11\nC. 12\nD. 13\nAnswer:")
    assert item.choices == (" A", " B", " C", " D") and item.gold == 2


def test_arc_numeric_labels_and_okapi_translations() -> None:
    arc = read_dataset("arc", FIXTURES / "arc").items[-1]
    assert isinstance(arc, MultipleChoiceItem) and arc.gold == 0 and arc.choices[0] == " nectar"
    french = [i for i in read_dataset("m_arc", FIXTURES / "m_arc", languages=["fr"]).items]
    assert french and all(isinstance(i, MultipleChoiceItem) and i.query.endswith("Réponse:") for i in french)


def test_an_item_is_never_its_own_example() -> None:
    data = read_dataset("arc", FIXTURES / "arc")
    for item in data.items:
        assert item not in pick_examples(item, data.examples, 25, seed=3)


def test_humaneval_gzipped_as_published(tmp_path: Path) -> None:
    packed = tmp_path / "HumanEval.jsonl.gz"
    packed.write_bytes(gzip.compress((FIXTURES / "humaneval" / "HumanEval.jsonl").read_bytes()))
    item = read_dataset("humaneval", packed).items[0]
    assert isinstance(item, CodeItem)
    assert program_for(item, item.reference).rstrip().endswith("check(add)")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "q", "answer": "no marker"}\n', "must end with '#### <number>'"),
        ('{"question": "q"}\n', "has no 'answer' field (it has: question)"),
        ("", "holds no records"),
        ("[1, 2]", "record 1 is not a JSON object"),
    ],
)
def test_bad_gsm8k_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text(content)
    with pytest.raises(EvalDataError, match=re.escape(message)):
        read_dataset("gsm8k", path)


def test_a_wrong_mmlu_row_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "x_test.csv").write_text("q,a,b,c,d,A\nq,a,b,c,d\n")
    with pytest.raises(EvalDataError, match=r"x_test.csv:2: 5 columns, expected 6"):
        read_dataset("mmlu", tmp_path)
    (tmp_path / "test" / "x_test.csv").write_text("q,a,b,c,d,E\n")
    with pytest.raises(EvalDataError, match="answer 'E' is not one of A, B, C, D"):
        read_dataset("mmlu", tmp_path)


def test_hellaswag_label_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"ctx": "c", "endings": ["a", "b"], "label": 2}) + "\n")
    with pytest.raises(EvalDataError, match=r"label 2 is out of range 0\.\.1"):
        read_dataset("hellaswag", path)


@pytest.mark.parametrize(
    ("reply", "number"),
    [("3 + 4 = 7.\n#### 7", "7"), ("It costs $1,200.50 in total.", "1200.5"), ("#### 12\nthen 13", "12"),
     ("no digits", None), ("-5 degrees", "-5"), ("That is 30.", "30")],
)
def test_gsm8k_answers(reply: str, number: str | None) -> None:
    assert extract_number(reply) == number


def test_code_is_cut_at_the_fence_and_loses_the_prefix() -> None:
    reply = "```python\ndef f():\n    return 1\n```\nExplanation"
    assert completion_code(reply, "```python\n", MBPP_STOPS) == "def f():\n    return 1"


def test_wilson_intervals() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(50, 100)
    assert (low, high) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    values = [1.0] * 30 + [0.0] * 70
    assert bootstrap_interval(values, seed=1) == bootstrap_interval(values, seed=1)
    low, high = bootstrap_interval(values, seed=1)
    assert low < 0.3 < high
