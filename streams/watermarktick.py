"""The scorer's watermark tick: declarations every second, idle sources and read reports.

Source watermarks ride on the scorer's forwards (`streams.pipeline.watermarks`), so a
terminal partition hears of a source only when a batch has transactions for it. Every
`streams.pipeline.watermarks.TICK_S` this task also sends each terminal partition a
forward message without rows that declares every source partition of this worker,
which keeps quiet terminal partitions current and carries the two facts only the
consumer knows:

- a source partition read to its end (processed position at its high watermark) is
  declared idle: it holds no reader back until it has events again;
- whether each of this worker's fraud-report partitions is read to its end: the
  terminal agent writes it into the partition's report entry when the tick (or any
  forward) arrives there, since the same worker owns both (co-partitioning).

Positions and high watermarks are read as the lag metric reads them
(``streams.stall.read_states``): one broker request per tick, nothing per event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from streams.pipeline.forwards import encode_forwards
from streams.pipeline.outputs import Send
from streams.pipeline.terminal import TerminalStage
from streams.pipeline.watermarks import TICK_S, SourceClock
from streams.stall import read_states, source_partitions

logger = logging.getLogger(__name__)


async def tick_watermarks(
    app: Any,
    *,
    clock: SourceClock,
    terminal: TerminalStage,
    send: Send,
    transactions: str,
    fraud_reports: str,
    forwards: str,
    partitions: int,
    interval_s: float = TICK_S,
) -> None:
    """Declare this worker's source watermarks to every terminal partition, forever.

    Nothing is read while a rebalance is under way (positions are being sought); a
    failed reading (a broker outage) skips the tick.
    """
    while True:
        await asyncio.sleep(interval_s)
        if app.rebalancing:
            continue
        assigned = {
            tp
            for tp in source_partitions(app)
            if tp.topic == transactions or tp.topic == fraud_reports
        }
        generation = clock.generation
        # Before the reading: a finding is as old as the high watermarks it compares with.
        read_at_ms = int(time.time() * 1000)
        try:
            states = await read_states(app.consumer, assigned)
        except Exception as exc:  # a broker outage: reported elsewhere
            logger.debug("watermark tick skipped: %r", exc)
            continue
        if app.rebalancing:
            continue
        sources: list[int] = []
        reports_read: dict[int, bool] = {}
        for tp, state in states.items():
            at_end = state.position >= state.highwater
            if tp.topic == transactions:
                clock.set_idle(tp.partition, at_end, generation)
                sources.append(tp.partition)
            else:
                reports_read[tp.partition] = at_end
        clock.forget(tp.partition for tp in assigned if tp.topic == transactions)
        terminal.reports_read_to_end = reports_read
        terminal.reports_read_at_ms = read_at_ms
        terminal.forget_reports(reports_read)
        declared = clock.declarations(sources)
        if not assigned:
            continue
        value = encode_forwards([], declared)
        try:
            for partition in range(partitions):
                await send(forwards, None, value, partition, None)
        except Exception as exc:  # the producer is down: the next tick says it again
            logger.debug("watermark tick not sent: %r", exc)
