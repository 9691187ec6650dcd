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

Lag in event-time seconds is not exported: it needs the timestamp of each partition's
newest record, a fetch per partition per interval. The dashboard divides the lag by the
consumption rate instead (seconds to catch up at the present pace).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP
from prometheus_client import Gauge

from streams.stall import PartitionState, read_states, source_partitions

logger = logging.getLogger(__name__)

#: Seconds between two lag readings: Prometheus scrapes every 5 s in the compose stack.
LAG_INTERVAL_S = 5.0


@dataclass
class LagReporter:
    """Sets the lag gauge of every partition read, and drops partitions gone elsewhere.

    Attributes:
        gauge: ``fraudstream_consumer_lag_records``, labelled ``topic`` and ``partition``.
    """

    gauge: Gauge
    _shown: set[TP] = field(default_factory=set)

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
