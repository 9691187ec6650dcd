"""streams.tablestore.resume: partitions resume at Redis's offsets, with the flow stopped.

The consumer here is a stand-in recording the calls the wrapper makes (Faust's consumer
needs a broker); the integration tests (tests/integration/tablestore/test_store_recovery.py)
run the real one through crashes and takeovers.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.tablestore import resume

SOURCE = "transactions"
CHANGELOG = "app-customer_windows-changelog"


class Follower:
    """A store that knows Redis's offsets for some partitions."""

    def __init__(self, offsets: Mapping[TP, int]) -> None:
        self.offsets = dict(offsets)
        self.starts: dict[TP, int] = {}

    def resume_offsets(self) -> Mapping[TP, int]:
        return self.offsets

    def note_start_positions(self, positions: Mapping[TP, int]) -> None:
        self.starts = dict(positions)

    unknown: set[int] = set()  # noqa: RUF012 - a test double's default
    refused: dict[TP, str] = {}  # noqa: RUF012

    def unknown_partitions(self) -> set[int]:
        return set(self.unknown)

    def refuse_sources(self, reasons: Mapping[TP, str]) -> None:
        self.refused = dict(reasons)


class Consumer:
    """What the wrapper touches of Faust's consumer, and a log of what happened in order."""

    def __init__(self, assigned: set[TP], committed: Mapping[TP, int]) -> None:
        self.events: list[str] = []
        self.flow_active = True
        self.assigned = assigned
        self._committed_offset: dict[TP, int] = dict(committed)
        self._read_offset: dict[TP, int] = {}
        self.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={CHANGELOG}))
        self.stale_read_after_seek: dict[TP, int] = {}

    def stop_flow(self) -> None:
        self.events.append("stop_flow")
        self.flow_active = False

    def resume_flow(self) -> None:
        self.events.append("resume_flow")
        self.flow_active = True

    async def perform_seek(self) -> None:  # Faust's: to the group's committed offsets
        self.events.append(f"faust_seek flowing={self.flow_active}")
        self._read_offset.update(self._committed_offset)

    def assignment(self) -> set[TP]:
        return self.assigned

    async def seek_wait(self, offsets: Mapping[TP, int]) -> None:
        self.events.append(f"seek_wait {sorted(offsets.values())}")
        self._read_offset.update(offsets)
        # Faust's fetch loop, finishing a message it abandoned, sets its read offset.
        self._read_offset.update(self.stale_read_after_seek)

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, 0)


async def test_the_seeks_run_with_the_flow_stopped_and_leave_it_stopped() -> None:
    tp = TP(SOURCE, 1)
    consumer = Consumer({tp, TP(CHANGELOG, 1)}, committed={tp: 10_867})
    resume.install(consumer, Follower({tp: 10_396}))
    await consumer.perform_seek()
    assert consumer.events == ["stop_flow", "faust_seek flowing=False", "seek_wait [10396]"]
    assert not consumer.flow_active  # Faust's caller clears the buffers, then resumes


async def test_redis_offsets_win_over_the_group_and_a_stale_read_offset() -> None:
    ahead, fresh = TP(SOURCE, 1), TP(SOURCE, 2)
    consumer = Consumer({ahead, fresh}, committed={ahead: 10_867})
    consumer.stale_read_after_seek = {ahead: 10_867}
    follower = Follower({ahead: 10_396})
    resume.install(consumer, follower)
    await consumer.perform_seek()
    assert consumer._read_offset[ahead] == 10_396  # not skipping 10,396..10,866
    assert consumer._committed_offset[ahead] == 10_396
    assert follower.starts == {ahead: 10_396, fresh: 0}  # a new partition from its start


async def test_a_failed_seek_leaves_the_fetch_loop_dropping_what_the_state_holds() -> None:
    """Faust's seek put the partition at the group's offset, behind Redis; then ours fails
    (Faust's fetch-loop caller only logs it). The fetch loop must not apply the events
    between the two again: its read offset is Redis's before the seek is even tried."""
    tp = TP(SOURCE, 1)
    consumer = Consumer({tp}, committed={tp: 9_000})

    async def broken_seek(offsets: Mapping[TP, int]) -> None:
        raise RuntimeError("no current assignment for partition")

    consumer.seek_wait = broken_seek  # type: ignore[method-assign]
    resume.install(consumer, Follower({tp: 9_450}))
    with pytest.raises(RuntimeError):
        await consumer.perform_seek()
    assert consumer._read_offset[tp] == 9_450
    assert consumer._committed_offset[tp] == 9_450


async def test_installing_twice_wraps_once_and_tells_every_follower() -> None:
    tp = TP(SOURCE, 0)
    consumer: Any = Consumer({tp}, committed={})
    first, second = Follower({tp: 5}), Follower({})
    resume.install(consumer, first)
    resume.install(consumer, second)
    await consumer.perform_seek()
    assert consumer.events.count("stop_flow") == 1
    assert first.starts == second.starts == {tp: 5}


async def test_a_source_the_group_read_but_redis_forgot_is_read_again_or_refused() -> None:
    """Redis emptied while no worker ran: the group's offsets must not be trusted."""
    rebuilt, deleted, kept = TP(SOURCE, 1), TP(SOURCE, 2), TP(SOURCE, 3)
    consumer = Consumer({rebuilt, deleted, kept}, committed={rebuilt: 500, deleted: 700, kept: 9})

    async def earliest(*tps: TP) -> dict[TP, int]:
        return {tp: 40 if tp == deleted else 0 for tp in tps}

    consumer.earliest_offsets = earliest  # type: ignore[method-assign]
    follower = Follower({})
    follower.unknown = {1, 2}  # partition 3 is known to Redis: its commit stands
    resume.install(consumer, follower)
    await consumer.perform_seek()
    assert follower.starts == {rebuilt: 0, kept: 9}
    assert "seek_wait [0]" in consumer.events
    assert list(follower.refused) == [deleted]
    assert "log no longer starts at 0" in follower.refused[deleted]
