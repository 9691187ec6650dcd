"""The scorer's watermark tick: declarations every second, and idle sources.

Source watermarks ride on the scorer's forwards (`streams.pipeline.watermarks`), so a
terminal partition hears of a source only when a batch has transactions for it. Every
`streams.pipeline.watermarks.TICK_S` this task also sends each terminal partition a
forward message without rows that declares every source partition of this worker,
which keeps quiet terminal partitions current and carries what only the consumer knows:
a source partition read to its end (processed position at its high watermark) for
``IDLE_AFTER_S`` (``streams.pipeline.watermarks.IdleSources``) is declared idle: it holds
no reader back until it has events again.

Why wait before declaring a source idle: its producers may hold events back. After a
broker outage, a replay resumes partition by partition, with days of event time queued;
a source at its end the moment the broker answered again was declared idle, the other
sources' reads went ahead of it, and its queued transactions then arrived too late for
them (one terminal count off in a broker-outage test). No source is declared idle while
this process's Kafka clients are in an outage, nor for ``IDLE_AFTER_S`` after one. At live
pace this costs nothing: a source that went quiet still declares its newest transaction
less a day, which covers every read for days (reads need transactions a week old).

Positions and high watermarks are read as the lag metric reads them
(``streams.stall.read_states``): one broker request per tick, nothing per event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streams.kafkalog import OUTAGE_LOG
from streams.pipeline.forwards import encode_forwards
from streams.pipeline.outputs import Send
from streams.pipeline.watermarks import TICK_S, IdleSources, SourceClock
from streams.stall import read_states, source_partitions

logger = logging.getLogger(__name__)


async def tick_watermarks(
    app: Any,
    *,
    clock: SourceClock,
    send: Send,
    transactions: str,
    forwards: str,
    partitions: int,
    interval_s: float = TICK_S,
    idle: IdleSources | None = None,
) -> None:
    """Declare this worker's source watermarks to every terminal partition, forever.

    Nothing is read while a rebalance is under way (positions are being sought); a
    failed reading (a broker outage) skips the tick.
    """
    idle = idle or IdleSources(in_outage=lambda: OUTAGE_LOG.in_outage)
    while True:
        await asyncio.sleep(interval_s)
        if app.rebalancing:
            idle.reset()
            continue
        assigned = {tp for tp in source_partitions(app) if tp.topic == transactions}
        generation = clock.generation
        try:
            states = await read_states(app.consumer, assigned)
        except Exception as exc:  # a broker outage: reported elsewhere
            logger.debug("watermark tick skipped: %r", exc)
            idle.reset()
            continue
        if app.rebalancing:
            idle.reset()
            continue
        sources: list[int] = []
        for tp, state in states.items():
            at_end = state.position >= state.highwater
            clock.set_idle(tp.partition, idle.observe(tp.partition, at_end), generation)
            sources.append(tp.partition)
        clock.forget(tp.partition for tp in assigned)
        declared = clock.declarations(sources)
        if not assigned:
            continue
        value = encode_forwards([], declared)
        try:
            for partition in range(partitions):
                await send(forwards, None, value, partition, None)
        except Exception as exc:  # the producer is down: the next tick says it again
            logger.debug("watermark tick not sent: %r", exc)
