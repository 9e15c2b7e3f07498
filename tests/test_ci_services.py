"""Tests that need PostgreSQL or Redis skip on a developer's machine without them, but fail under `CI=true`.

Run for real: pytest runs the real tests that need those services, pointed at a port where nothing listens.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import free_port

NEEDING_SERVICES = [
    "tests/storage/test_usage.py::test_rollups_add_up_across_batches[postgresql]",  # the `database` fixture
    "tests/api/test_scale_out.py",  # PostgreSQL and Redis
    "tests/api/test_remote_models.py::test_two_workers_serve_a_remote_model_and_share_limits",  # Redis
]


@pytest.mark.parametrize("ci", ["true", ""])
def test_tests_that_need_an_unreachable_service_fail_in_ci_and_skip_elsewhere(ci: str) -> None:
    closed = free_port()
    env = {
        **os.environ,
        "CI": ci,
        "GALERNE_TEST_POSTGRES_URL": f"postgresql+psycopg://postgres@127.0.0.1:{closed}/postgres",
        "GALERNE_TEST_REDIS_URL": f"redis://127.0.0.1:{closed}/0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=no", "-rfEs", *NEEDING_SERVICES],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    summary = result.stdout.strip().splitlines()[-1]
    if ci:
        assert result.returncode == 1 and "skipped" not in summary and "passed" not in summary, result.stdout
        assert result.stdout.count("under CI=true a test that needs it fails instead of skipping") == 4
    else:
        assert result.returncode == 0 and "4 skipped" in summary, result.stdout
