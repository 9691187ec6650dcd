"""streams.stall: a partition with a backlog that stops progressing is reported, once."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from streams.metrics import PipelineMetrics
from streams.stall import (
    PartitionState,
    StallChanges,
    StallDetector,
    StallReporter,
    check_interval,
    read_states,
)

A = TP("transactions", 3)
B = TP("transactions", 4)
C = TP("transactions", 5)


def state(position: int, highwater: int, marker: object = None) -> PartitionState:
    return PartitionState(position, highwater, (position, marker))


def test_a_partition_with_a_backlog_that_does_not_move_is_stalled_after_the_time() -> None:
    detector = StallDetector(60)
    assert detector.check(0, {A: state(0, 500)}) == StallChanges()
    assert detector.check(59.9, {A: state(0, 500)}) == StallChanges()
    changes = detector.check(60, {A: state(0, 500)})
    assert [(s.tp, s.position, s.highwater, s.backlog) for s in changes.stalled] == [
        (A, 0, 500, 500)
    ]
    assert changes.stalled[0].idle_s == 60
    assert detector.stalled == {A}
    # Reported once, not at every check.
    assert detector.check(120, {A: state(0, 600)}) == StallChanges()


def test_progress_restarts_the_clock_and_ends_a_stall() -> None:
    detector = StallDetector(60)
    detector.check(0, {A: state(0, 500)})
    detector.check(50, {A: state(10, 500)})  # moved: the clock restarts
    assert detector.check(100, {A: state(10, 500)}) == StallChanges()
    assert detector.check(110, {A: state(10, 500)}).stalled
    changes = detector.check(120, {A: state(11, 500)})
    assert changes.recovered == [A]
    assert detector.stalled == set()


def test_a_partition_at_its_high_watermark_is_never_stalled() -> None:
    detector = StallDetector(60)
    for now in (0, 60, 120, 600):
        assert detector.check(now, {A: state(500, 500)}) == StallChanges()


def test_catching_up_without_a_new_marker_ends_a_stall() -> None:
    detector = StallDetector(1)
    detector.check(0, {A: state(5, 9)})
    assert detector.check(1, {A: state(5, 9)}).stalled
    # The records past it were deleted by retention: no backlog any more.
    assert detector.check(2, {A: state(5, 5)}).recovered == [A]


def test_a_marker_change_is_progress_even_at_the_same_position() -> None:
    detector = StallDetector(10)
    detector.check(0, {A: PartitionState(5, 9, ("committed 5", "read 6"))})
    detector.check(9, {A: PartitionState(5, 9, ("committed 5", "read 7"))})
    assert detector.check(18, {A: PartitionState(5, 9, ("committed 5", "read 7"))}).stalled == []
    assert detector.check(19, {A: PartitionState(5, 9, ("committed 5", "read 7"))}).stalled


def test_a_revoked_partition_is_forgotten_and_released_if_it_was_stalled() -> None:
    detector = StallDetector(1)
    detector.check(0, {A: state(0, 9), B: state(0, 9)})
    assert {s.tp for s in detector.check(1, {A: state(0, 9), B: state(0, 9)}).stalled} == {A, B}
    changes = detector.check(2, {B: state(0, 9)})
    assert changes.released == [A]
    # Assigned again later: a new clock.
    assert detector.check(3, {A: state(0, 9), B: state(0, 9)}).stalled == []


def test_the_stall_time_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StallDetector(0)


def test_checks_run_four_times_per_stall_time_and_at_least_every_ten_seconds() -> None:
    assert check_interval(8) == 2
    assert check_interval(60) == 10
    assert check_interval(600) == 10


class FakeConsumer:
    """The consumer members read_states uses."""

    def __init__(
        self,
        committed: Mapping[TP, int | None],
        read: Mapping[TP, int | None],
        highwaters: Mapping[TP, int],
        earliest: Mapping[TP, int],
    ) -> None:
        self._committed_offset = dict(committed)
        self._read_offset = dict(read)
        self._highwaters = dict(highwaters)
        self._earliest = dict(earliest)
        self.earliest_asked: list[TP] = []

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self._highwaters[tp] for tp in tps}

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        self.earliest_asked.extend(tps)
        return {tp: self._earliest[tp] for tp in tps}


async def test_positions_come_from_commits_then_reads_then_the_log_start() -> None:
    consumer = FakeConsumer(
        committed={A: 40, B: None},
        read={A: 55, B: 12},
        highwaters={A: 100, B: 100, C: 100},
        earliest={C: 7},
    )
    states = await read_states(consumer, {A, B, C})
    assert {tp: s.position for tp, s in states.items()} == {A: 40, B: 13, C: 7}
    assert all(s.highwater == 100 for s in states.values())
    assert consumer.earliest_asked == [C]  # only a partition with no position at all
    assert await read_states(consumer, set()) == {}


async def test_a_partition_left_at_its_start_with_a_backlog_is_found_stalled() -> None:
    """The #15 takeover: nothing committed, nothing read, records waiting."""
    consumer = FakeConsumer(committed={}, read={}, highwaters={A: 1282}, earliest={A: 0})
    detector = StallDetector(60)
    detector.check(0, await read_states(consumer, {A}))
    changes = detector.check(60, await read_states(consumer, {A}))
    assert [s.backlog for s in changes.stalled] == [1282]


def test_the_reporter_sets_the_gauge_counts_and_logs_one_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    reporter = StallReporter(metrics.partition_stalled, metrics.partition_stalls)
    detector = StallDetector(1)
    detector.check(0, {A: state(0, 9)})
    labels = {"topic": "transactions", "partition": "3"}

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    with caplog.at_level(logging.WARNING, logger="streams.stall"):
        reporter.report(detector.check(1, {A: state(0, 9)}), 1)
    assert value("fraudstream_partition_stalled", **labels) == 1
    assert value("fraudstream_partition_stalls_total") == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "transactions[3] is stalled" in errors[0].getMessage()
    assert "9 records behind it" in errors[0].getMessage()

    reporter.report(detector.check(2, {A: state(1, 9)}), 1)
    assert value("fraudstream_partition_stalled", **labels) == 0
    reporter.report(detector.check(3, {A: state(1, 9)}), 1)
    reporter.report(detector.check(4, {}), 1)  # revoked while stalled: series removed
    assert value("fraudstream_partition_stalled", **labels) is None
    assert value("fraudstream_partition_stalls_total") == 2
