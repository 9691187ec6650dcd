"""Report partitions that stop progressing while they have a backlog: never silence.

A partition assigned to a worker whose position does not move while the log has
records past it is losing time, or events: the takeover bug of issue #15 left three
partitions at their end of log with their records never applied, with a healthy worker
and no ERROR line. :class:`StallDetector` holds the pure rule; :func:`watch_partitions`
runs it as a task of the worker (``streams.pipeline`` wires it) and turns every change
into the ``fraudstream_partition_stalled`` gauge (1 while stalled, per topic and
partition), the ``fraudstream_partition_stalls`` counter and one ERROR line per stall.

The rule
    A partition is stalled when its processed position is below its high watermark
    (a backlog) and has not changed for ``stall_after_s`` (``Settings.
    partition_stall_after_s``, 60 s by default). Any progress, or reaching the high
    watermark, ends the stall. A check runs every ``stall_after_s / 4`` (at most 10 s),
    so a stall is reported at most that long after the time is up.

The processed position
    Faust's consumer keeps, per partition, the offset its last commit covered
    (``Consumer._committed_offset``, also set by the seek that follows every rebalance)
    and the last offset its fetch loop handed to the streams (``Consumer._read_offset``,
    kept by ``Consumer._drain_messages``, here ``streams.faustcompat.fetchloop``), both
    read through ``streams.faustcompat.offsets``. The position is the committed offset
    when there is one (exact: what is processed and acknowledged), else the read offset
    plus one, else the earliest offset Kafka holds (nothing read yet); progress is a
    change of either. aiokafka's own fetch position is not used: it runs
    ahead of what the streams got (prefetched records), and the #15 bug left it at the
    end of log for records that were never delivered. High watermarks come from
    ``Consumer.highwaters`` (a ListOffsets request per check) and the earliest offsets
    from ``Consumer.earliest_offsets``, only for partitions with no position at all.
    These two members are Faust's own ``ConsumerT`` API; the two offset maps are not
    published and are read defensively (a missing map is no position).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP
from prometheus_client import Counter, Gauge

from streams.faustcompat import offsets

logger = logging.getLogger(__name__)

#: Longest time between two checks, whatever the stall time.
MAX_CHECK_INTERVAL_S = 10.0


@dataclass(frozen=True)
class PartitionState:
    """What a check saw of one partition.

    Attributes:
        position: The next offset to process.
        highwater: The offset the next record written to the partition will get.
        marker: Anything that changes when the partition progresses.
    """

    position: int
    highwater: int
    marker: Hashable


@dataclass(frozen=True)
class Stall:
    """A partition found stalled.

    Attributes:
        tp: The partition.
        position: Where it is stuck.
        highwater: Its high watermark then.
        idle_s: How long it has not progressed.
    """

    tp: TP
    position: int
    highwater: int
    idle_s: float

    @property
    def backlog(self) -> int:
        """Records waiting past the position."""
        return self.highwater - self.position


@dataclass(frozen=True)
class StallChanges:
    """What changed at a check.

    Attributes:
        stalled: Partitions that have just become stalled.
        recovered: Stalled partitions that progressed or caught up.
        released: Stalled partitions no longer assigned to this worker.
    """

    stalled: list[Stall] = field(default_factory=list)
    recovered: list[TP] = field(default_factory=list)
    released: list[TP] = field(default_factory=list)


@dataclass
class _Track:
    marker: Hashable
    since: float
    stalled: bool = False


class StallDetector:
    """The stall rule over successive checks of the assigned partitions (pure logic)."""

    def __init__(self, stall_after_s: float) -> None:
        """Report a partition once it has not progressed with a backlog for ``stall_after_s``."""
        if stall_after_s <= 0:
            raise ValueError("stall_after_s must be positive")
        self.stall_after_s = stall_after_s
        self._tracks: dict[TP, _Track] = {}

    @property
    def stalled(self) -> set[TP]:
        """The partitions stalled now."""
        return {tp for tp, track in self._tracks.items() if track.stalled}

    def check(self, now: float, states: Mapping[TP, PartitionState]) -> StallChanges:
        """Apply one check at monotonic time ``now`` to every assigned partition.

        Args:
            now: A monotonic clock reading, in seconds.
            states: Every partition assigned now; a partition missing from it is
                forgotten (revoked), and reported released if it was stalled.
        """
        changes = StallChanges()
        for tp in [tp for tp in self._tracks if tp not in states]:
            if self._tracks.pop(tp).stalled:
                changes.released.append(tp)
        for tp, state in states.items():
            track = self._tracks.get(tp)
            if track is None:
                self._tracks[tp] = _Track(state.marker, now)
                continue
            if state.marker != track.marker or state.position >= state.highwater:
                track.marker = state.marker
                track.since = now
                if track.stalled:
                    track.stalled = False
                    changes.recovered.append(tp)
                continue
            idle = now - track.since
            if not track.stalled and idle >= self.stall_after_s:
                track.stalled = True
                changes.stalled.append(Stall(tp, state.position, state.highwater, idle))
        return changes


def check_interval(stall_after_s: float) -> float:
    """Seconds between two checks: a quarter of the stall time, at most 10 s."""
    return min(stall_after_s / 4, MAX_CHECK_INTERVAL_S)


def source_partitions(app: Any) -> set[TP]:
    """The partitions assigned to this worker of the topics its agents read.

    Changelog topics and Faust's randomly assigned leader topic are left out: they
    carry no events to process (the stall check and the lag metric share this choice).
    """
    consumer = app.consumer
    skip = set(app.tables.changelog_topics) | set(getattr(consumer, "randomly_assigned_topics", ()))
    return {tp for tp in consumer.assignment() if tp.topic not in skip}


async def read_states(consumer: Any, partitions: set[TP]) -> dict[TP, PartitionState]:
    """The processed position and high watermark of ``partitions`` (see the module docstring).

    Faust's edge: reads the consumer's offset maps and asks the broker for high
    watermarks (and earliest offsets of partitions with no position) in two requests.
    """
    if not partitions:
        return {}
    committed = offsets.committed_offsets(consumer)
    read = offsets.read_offsets(consumer)
    known: dict[TP, tuple[int, Hashable]] = {}
    unknown: list[TP] = []
    for tp in partitions:
        done, fetched = committed.get(tp), read.get(tp)
        marker = (done, fetched)
        if done is not None:
            known[tp] = (done, marker)
        elif fetched is not None:
            known[tp] = (fetched + 1, marker)
        else:
            unknown.append(tp)
    highwaters = dict(await consumer.highwaters(*partitions))
    earliest = dict(await consumer.earliest_offsets(*unknown)) if unknown else {}
    known.update((tp, (offset, (None, None))) for tp, offset in earliest.items())
    return {
        tp: PartitionState(position, int(highwaters[tp]), marker)
        for tp, (position, marker) in known.items()
        if highwaters.get(tp) is not None
    }


@dataclass
class StallReporter:
    """Turns :class:`StallChanges` into the metrics and the log lines.

    Attributes:
        gauge: ``fraudstream_partition_stalled``, labelled ``topic`` and ``partition``.
        counter: ``fraudstream_partition_stalls``: stalls detected.
    """

    gauge: Gauge
    counter: Counter

    def report(self, changes: StallChanges, stall_after_s: float) -> None:
        """Set the gauge of every changed partition; one ERROR line per new stall."""
        for stall in changes.stalled:
            tp = stall.tp
            self.gauge.labels(topic=tp.topic, partition=str(tp.partition)).set(1)
            self.counter.inc()
            logger.error(
                "partition %s[%d] is stalled: at offset %d for %.0f s (limit %.0f s) "
                "with %d records behind it (high watermark %d)",
                tp.topic,
                tp.partition,
                stall.position,
                stall.idle_s,
                stall_after_s,
                stall.backlog,
                stall.highwater,
            )
        for tp in changes.recovered:
            self.gauge.labels(topic=tp.topic, partition=str(tp.partition)).set(0)
            logger.warning("partition %s[%d] progresses again", tp.topic, tp.partition)
        for tp in changes.released:
            # Its new owner reports it if it stays stuck there.
            self.gauge.remove(tp.topic, str(tp.partition))


async def watch_partitions(
    app: Any,
    detector: StallDetector,
    reporter: StallReporter,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Check the worker's source partitions forever (a Faust app task).

    Only source partitions are checked (:func:`source_partitions`), and no
    check runs while a rebalance is under way (the clock of each partition keeps
    running: a rebalance that lasts past the stall time is reported after it).
    """
    interval = check_interval(detector.stall_after_s)
    consumer = app.consumer
    while True:
        await asyncio.sleep(interval)
        if app.rebalancing:
            continue
        try:
            states = await read_states(consumer, source_partitions(app))
        except Exception as exc:  # a broker outage: reported elsewhere, try again
            logger.warning("partition stall check skipped: %r", exc)
            continue
        if app.rebalancing:
            continue
        reporter.report(detector.check(clock(), states), detector.stall_after_s)
