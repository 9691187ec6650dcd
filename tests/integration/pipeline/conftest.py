"""Fixtures of the pipeline's integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pipeline_harness import stop_replays


@pytest.fixture(autouse=True)
def _replays_end_with_their_test() -> Iterator[None]:
    """No replay outlives the test that started it (`pipeline_harness.stop_replays`)."""
    yield
    stop_replays()
