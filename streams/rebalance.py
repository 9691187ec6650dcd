"""Rebalances as metrics: how many, how long, and what the worker holds after each.

A rebalance stops a worker's processing from the moment its partitions are revoked
until its tables are recovered and its streams resumed: under load each one cost 1-3 s
of p99 latency, visible before only in Faust's multi-line log tables. This module turns
them into ``fraudstream_rebalances_total``, the ``fraudstream_rebalance_duration_seconds``
histogram and the ``fraudstream_assigned_partitions`` gauge (source partitions by topic,
set when each rebalance ends).

How it is observed
    Faust keeps ``App.rebalancing`` (set when partitions are revoked, cleared when the
    streams resume) and ``App.rebalancing_count`` (one per start). A task polls both
    every `POLL_INTERVAL_S`: two attribute reads. A Faust sensor would time them exactly
    but is called for every message, send and table access, which the hot path must not
    pay. A duration is therefore known within one poll interval (0.1 s against rebalances
    of seconds); a rebalance that starts again before it ends (a member joining during
    a recovery) counts each start but is one duration, from the first start to the
    streams resuming, which is what the events waiting saw.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from streams.stall import source_partitions

#: Seconds between two looks at the app's rebalance state.
POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class RebalanceChanges:
    """What a poll found.

    Attributes:
        started: Rebalances started since the previous poll.
        ended: Durations, in seconds, of the rebalances that ended since then.
    """

    started: int = 0
    ended: tuple[float, ...] = ()


class RebalanceTracker:
    """Rebalance starts and durations from successive polls (pure logic)."""

    def __init__(self, count: int = 0) -> None:
        """Start from Faust's ``rebalancing_count`` (0 before the worker joins its group)."""
        self._count = count
        self._started: float | None = None
        self._last_poll: float | None = None

    @property
    def in_rebalance(self) -> bool:
        """Whether a rebalance was under way at the last poll."""
        return self._started is not None

    def poll(self, now: float, rebalancing: bool, count: int) -> RebalanceChanges:
        """Apply one look at the app at monotonic time ``now``.

        Args:
            now: A monotonic clock reading, in seconds.
            rebalancing: ``App.rebalancing``.
            count: ``App.rebalancing_count``: rebalances started since the app started.
        """
        started = max(0, count - self._count)
        self._count = max(count, self._count)
        previous, self._last_poll = self._last_poll, now
        ended: tuple[float, ...] = ()
        if self._started is None and (rebalancing or started):
            # Began since the last poll: now is the latest it can have begun.
            self._started = now
            if not rebalancing:
                # Began and ended between two polls: it lasted less than one interval
                # (at the first poll, how long is unknown: counted, not timed).
                ended = (now - previous,) if previous is not None else ()
                self._started = None
        elif self._started is not None and not rebalancing:
            ended = (now - self._started,)
            self._started = None
        return RebalanceChanges(started, ended)


@dataclass
class RebalanceReporter:
    """Turns :class:`RebalanceChanges` into the metrics.

    Attributes:
        counter: ``fraudstream_rebalances``.
        duration: ``fraudstream_rebalance_duration_seconds``.
        assigned: ``fraudstream_assigned_partitions``, labelled ``topic``.
    """

    counter: Counter
    duration: Histogram
    assigned: Gauge
    _topics: set[str] = field(default_factory=set)

    def report(self, changes: RebalanceChanges) -> None:
        """Count the rebalances started and observe the durations of those ended."""
        if changes.started:
            self.counter.inc(changes.started)
        for seconds in changes.ended:
            self.duration.observe(seconds)

    def show_assignment(self, topics: list[str]) -> None:
        """Set the partitions per topic, one topic name per assigned partition.

        A topic this worker held before and holds no partition of now shows 0.
        """
        counts = Tally(topics)
        for topic in self._topics | counts.keys():
            self.assigned.labels(topic=topic).set(counts.get(topic, 0))
        self._topics |= counts.keys()


async def watch_rebalances(
    app: Any,
    tracker: RebalanceTracker,
    reporter: RebalanceReporter,
    *,
    interval_s: float = POLL_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Poll the app's rebalance state forever (a Faust app task)."""
    while True:
        changes = tracker.poll(clock(), bool(app.rebalancing), int(app.rebalancing_count))
        reporter.report(changes)
        if changes.ended and not tracker.in_rebalance:
            reporter.show_assignment([tp.topic for tp in source_partitions(app)])
        await asyncio.sleep(interval_s)
