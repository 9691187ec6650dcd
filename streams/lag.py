"""Consumer lag per assigned partition, in records: ``fraudstream_consumer_lag_records``.

A worker knows both ends of its lag: its processed position in each source partition
and the partition's high watermark. They are read exactly as the stall check reads them
(``streams.stall.read_states``: the committed offset, else the last offset handed to the
streams plus one; high watermarks from one ListOffsets request), every `LAG_INTERVAL_S`,
so the metric needs no lag exporter beside Prometheus and costs one broker request per
interval, nothing per event.

Because the position is the committed offset, a healthy worker under load shows up to a
commit interval's worth of records (``commit_interval_s``) as lag; a lag that grows is
the sign of too few workers or a stuck one.

Lag in seconds (``fraudstream_consumer_lag_seconds``): while a partition has a backlog,
how long ago the last record the worker took from it was produced (`TakenRecords`: its
``fraudstream-sent-ms`` header when plausible, else its Kafka timestamp when plausible;
replays stamp historical event times as Kafka timestamps). The record after it was
produced later, so this bounds from above how long the backlog's head has waited. 0
without a backlog; absent for a partition nothing was taken from yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP
from prometheus_client import Gauge

from streams.kafka import plausible_sent_at_ms, sent_at_ms
from streams.stall import PartitionState, read_states, source_partitions

logger = logging.getLogger(__name__)

#: Seconds between two lag readings: Prometheus scrapes every 5 s in the compose stack.
LAG_INTERVAL_S = 5.0


#: Oldest produce time read as one (a week), as for alert latencies.
_MAX_AGE_MS = 7 * 86_400_000


class TakenRecords:
    """When the last record taken from each source partition was produced (epoch ms).

    Noted once per micro-batch per partition (its last record), by every agent.
    """

    def __init__(self) -> None:
        self.produced_ms: dict[TP, int] = {}

    def note(self, events: Sequence[Any]) -> None:
        """Remember the produce time of each partition's last record in ``events``."""
        last: dict[TP, Any] = {}
        for event in events:
            message = event.message
            last[message.tp] = message
        if not last:
            return
        now_ms = int(time.time() * 1000)
        for tp, message in last.items():
            produced = plausible_sent_at_ms(sent_at_ms(message.headers), now_ms, _MAX_AGE_MS)
            if produced is None and message.timestamp is not None:
                stamp = int(message.timestamp * 1000)
                produced = plausible_sent_at_ms(stamp, now_ms, _MAX_AGE_MS)
            if produced is not None:
                self.produced_ms[tp] = produced


@dataclass
class LagReporter:
    """Sets the lag gauge of every partition read, and drops partitions gone elsewhere.

    Attributes:
        gauge: ``fraudstream_consumer_lag_records``, labelled ``topic`` and ``partition``.
    """

    gauge: Gauge
    seconds: Gauge | None = None
    taken: TakenRecords | None = None
    _shown: set[TP] = field(default_factory=set)
    _shown_seconds: set[TP] = field(default_factory=set)

    def report(self, states: Mapping[TP, PartitionState]) -> None:
        """Show the lag of ``states``; remove the series of partitions not among them.

        A partition revoked from this worker loses its series here, so two workers never
        report the same partition for longer than one interval.
        """
        for tp in self._shown - states.keys():
            self.gauge.remove(tp.topic, str(tp.partition))
        for tp, state in states.items():
            lag = max(0, state.highwater - state.position)
            self.gauge.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
        self._shown = set(states)
        if self.seconds is not None:
            self._report_seconds(states)

    def _report_seconds(self, states: Mapping[TP, PartitionState]) -> None:
        seconds = self.seconds
        assert seconds is not None
        produced = {} if self.taken is None else self.taken.produced_ms
        now_ms = time.time() * 1000
        shown: set[TP] = set()
        for tp, state in states.items():
            if state.highwater <= state.position:
                age = 0.0
            elif tp in produced:
                age = max(0.0, (now_ms - produced[tp]) / 1000)
            else:
                continue
            seconds.labels(topic=tp.topic, partition=str(tp.partition)).set(age)
            shown.add(tp)
        for tp in self._shown_seconds - shown:
            seconds.remove(tp.topic, str(tp.partition))
        self._shown_seconds = shown


async def watch_lag(app: Any, reporter: LagReporter, interval_s: float = LAG_INTERVAL_S) -> None:
    """Read the lag of the worker's source partitions forever (a Faust app task).

    Nothing is read while a rebalance is under way (positions are being sought); a
    failed reading (a broker outage) keeps the last values until the next one.
    """
    while True:
        await asyncio.sleep(interval_s)
        if app.rebalancing:
            continue
        try:
            states = await read_states(app.consumer, source_partitions(app))
        except Exception as exc:  # a broker outage: reported elsewhere, try again
            logger.debug("consumer lag reading skipped: %r", exc)
            continue
        if not app.rebalancing:
            reporter.report(states)
