"""The corpus of `test_corpus.py` decoded at temperature 0.8: sampling must not break the guarantee either."""

from __future__ import annotations

import pytest

from tests.conftest import RunningServer
from tests.structured.test_corpus import check_every_schema


@pytest.mark.timeout(1800)
async def test_every_schema_yields_valid_json_sampled(server: RunningServer, model_id: str) -> None:
    await check_every_schema(server, model_id, temperature=0.8)
