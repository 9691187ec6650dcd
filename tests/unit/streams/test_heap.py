"""streams.heap: the worker's heap is frozen out of collections, young ones are rarer."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_settling_freezes_the_live_objects_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    survivor = [object() for _ in range(1000)]
    heap.settle("test")
    assert gc.get_freeze_count() >= len(survivor)
    assert gc.get_threshold() == (heap.GEN0_THRESHOLD, 10, 10)
    assert not any(o is survivor for o in gc.get_objects(2))  # not walked any more


@pytest.mark.usefixtures("restored_gc")
def test_a_higher_threshold_is_kept_and_garbage_is_not_frozen() -> None:
    gc.unfreeze()
    gc.set_threshold(50_000, 5, 5)

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    garbage = weakref.ref(Cycle())  # reachable only from itself
    assert garbage() is not None
    heap.settle("test")
    assert gc.get_threshold() == (50_000, 5, 5)
    assert garbage() is None  # collected, not frozen
