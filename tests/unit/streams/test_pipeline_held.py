"""The scorer's queue of held transactions per source partition (streams.pipeline.score)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.pipeline.score import _Held, _SourceHeld
from streams.pipeline.watermarks import Pending


def _held(time_ms: int) -> _Held:
    event: Any = None
    return _Held(event, None, Pending(0, time_ms, 0), 0.0, 0)  # type: ignore[arg-type]


@given(
    st.lists(
        st.one_of(st.integers(0, 10_000), st.none()),  # a time appended, or None: one taken
        max_size=200,
    )
)
def test_the_earliest_held_time_is_the_minimum_of_what_is_held(steps: list[int | None]) -> None:
    queue = _SourceHeld()
    held: list[int] = []
    appended: list[int] = []
    for step in steps:
        if step is None:
            if not held:
                continue
            assert queue.popleft().pending.time_ms == held.pop(0)  # in order
        else:
            queue.append(_held(step))
            held.append(step)
            appended.append(step)
        assert len(queue.items) == len(held)
        if held:
            assert queue.earliest == min(held)
            assert queue.latest == max(appended)
