"""The test harness itself: how its servers share the machine."""

from __future__ import annotations

import os

import pytest

from tests.conftest import engine_threads


def test_each_worker_s_servers_get_its_share_of_the_cores() -> None:
    """With `-n 2` on 2 cores every test server runs a 1-thread engine. A worker once inherited the count the
    xdist controller had set for a single process (all the cores), and CI took 57 minutes instead of 15."""
    if os.environ.get("GALERNE_TEST_THREADS"):
        pytest.skip("GALERNE_TEST_THREADS chooses the count")
    assert os.environ["GALERNE_NUM_THREADS"] == str(engine_threads())
