"""streams.rebalance: rebalances counted and timed from polls of the app's state."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP
from prometheus_client import CollectorRegistry

from streams.metrics import PipelineMetrics
from streams.rebalance import (
    RebalanceChanges,
    RebalanceReporter,
    RebalanceTracker,
    watch_rebalances,
)


def test_a_rebalance_is_timed_from_the_poll_that_sees_it_to_the_one_that_sees_it_end() -> None:
    tracker = RebalanceTracker()
    assert tracker.poll(0.0, False, 0) == RebalanceChanges()
    assert tracker.poll(0.1, True, 1) == RebalanceChanges(started=1)
    assert tracker.in_rebalance
    assert tracker.poll(1.0, True, 1) == RebalanceChanges()
    changes = tracker.poll(2.1, False, 1)
    assert changes.started == 0
    assert changes.ended == (2.0,)
    assert not tracker.in_rebalance
    assert tracker.poll(2.2, False, 1) == RebalanceChanges()


def test_a_rebalance_started_again_before_it_ended_is_two_starts_and_one_duration() -> None:
    tracker = RebalanceTracker(count=3)
    assert tracker.poll(0.0, True, 4).started == 1
    assert tracker.poll(1.0, True, 5).started == 1
    assert tracker.poll(3.0, False, 5).ended == (3.0,)


def test_a_rebalance_between_two_polls_is_counted_and_lasted_at_most_one_interval() -> None:
    tracker = RebalanceTracker()
    tracker.poll(0.0, False, 0)
    changes = tracker.poll(0.1, False, 1)
    assert changes.started == 1
    assert changes.ended == (0.1,)
    # Seen at the very first poll: counted, but how long it lasted is unknown.
    assert RebalanceTracker().poll(5.0, False, 1) == RebalanceChanges(started=1)


def value(metrics: PipelineMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_the_reporter_counts_observes_and_shows_partitions_per_topic() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    reporter = RebalanceReporter(
        metrics.rebalances, metrics.rebalance_duration, metrics.assigned_partitions
    )
    reporter.report(RebalanceChanges(started=2, ended=(1.7,)))
    assert value(metrics, "fraudstream_rebalances_total") == 2
    assert value(metrics, "fraudstream_rebalance_duration_seconds_count") == 1
    assert value(metrics, "fraudstream_rebalance_duration_seconds_bucket", le="1.5") == 0
    assert value(metrics, "fraudstream_rebalance_duration_seconds_bucket", le="2.0") == 1
    reporter.show_assignment(["transactions", "transactions", "fraud-reports"])
    assert value(metrics, "fraudstream_assigned_partitions", topic="transactions") == 2
    assert value(metrics, "fraudstream_assigned_partitions", topic="fraud-reports") == 1
    reporter.show_assignment(["transactions"])
    assert value(metrics, "fraudstream_assigned_partitions", topic="fraud-reports") == 0


class FakeApp:
    def __init__(self) -> None:
        self.rebalancing = False
        self.rebalancing_count = 0
        self.consumer = self
        self.tables = self
        self.changelog_topics = {"app-customer_windows-changelog"}

    def assignment(self) -> set[TP]:
        return {TP("transactions", 0), TP("app-customer_windows-changelog", 0)}


async def test_the_task_reports_a_rebalance_and_the_assignment_after_it() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    reporter = RebalanceReporter(
        metrics.rebalances, metrics.rebalance_duration, metrics.assigned_partitions
    )
    app: Any = FakeApp()
    task = asyncio.create_task(watch_rebalances(app, RebalanceTracker(), reporter, interval_s=0.01))
    try:
        await asyncio.sleep(0.03)
        app.rebalancing, app.rebalancing_count = True, 1
        await asyncio.sleep(0.05)
        assert value(metrics, "fraudstream_rebalances_total") == 1
        assert value(metrics, "fraudstream_assigned_partitions", topic="transactions") is None
        app.rebalancing = False
        await asyncio.sleep(0.05)
        assert value(metrics, "fraudstream_rebalance_duration_seconds_count") == 1
        assert value(metrics, "fraudstream_assigned_partitions", topic="transactions") == 1
        changelog = "app-customer_windows-changelog"
        assert value(metrics, "fraudstream_assigned_partitions", topic=changelog) is None
    finally:
        task.cancel()
