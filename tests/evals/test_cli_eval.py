"""`galerne eval` on the command line: clear errors without tracebacks, and one real run with its report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.evals.harness import FIXTURES


def _galerne(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GALERNE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "galerne", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


@pytest.mark.parametrize(
    ("task", "data", "message"),
    [
        ("arc", "missing.jsonl", "data path not found"),
        ("arc", "gsm8k/test.jsonl", "'question' must hold 'stem' and 'choices'"),  # GSM8K's question is text
        ("mmlu", "arc", "not an MMLU data directory"),
        ("gsm8k", "hellaswag/hellaswag_val.jsonl", "has no 'answer' field"),
        ("humaneval", "mbpp/mbpp.jsonl", "has no 'entry_point' field"),
        ("m_mmlu", "m_mmlu", "no <lang>_<split>.json file for pt"),
        ("sorting", "arc", "unknown task"),
    ],
)
def test_bad_data_is_one_clear_error_line(tmp_path: Path, task: str, data: str, message: str) -> None:
    extra = ["--languages", "fr,pt"] if task == "m_mmlu" else []
    result = _galerne(tmp_path, "eval", "run", "--model", "smollm2", "--task", task, "--data",
                      str(FIXTURES / data), *extra)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_file_that_is_not_json_lines_is_named_with_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"ctx": "a", "endings": ["b"], "label": 0}\nnot json\n')
    result = _galerne(tmp_path, "eval", "run", "--model", "smollm2", "--task", "hellaswag", "--data", str(broken))
    assert result.returncode == 2
    assert f"{broken}:2: not a JSON line" in result.stderr
    assert "Traceback" not in result.stderr


def test_report_without_runs_says_how_to_make_one(tmp_path: Path) -> None:
    result = _galerne(tmp_path, "eval", "report")
    assert result.returncode == 1
    assert "galerne eval run" in result.stderr


def test_run_then_report_with_a_plot(tmp_path: Path) -> None:
    run = _galerne(tmp_path, "eval", "run", "--model", "smollm2", "--task", "arc", "--data", str(FIXTURES / "arc"),
                   "--limit", "2", "--shots", "0", "--project", "bench-evals")
    assert run.returncode == 0, run.stderr
    assert "| arc | en | smollm2-135m-instruct | 2 |" in run.stdout
    plot = tmp_path / "compare.svg"
    report = _galerne(tmp_path, "eval", "report", "--format", "csv", "--plot", str(plot))
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines()[1].startswith("arc,en,smollm2-135m-instruct,2,")
    assert plot.read_text().lstrip().startswith("<?xml")
    usage = _galerne(tmp_path, "usage", "--project", "bench-evals", "--json")
    assert usage.returncode == 0, usage.stderr
    assert "smollm2-135m-instruct" in usage.stdout  # the evaluation was metered under its project
