"""The scorer's watermark tick: declarations every second, and idle sources.

Source watermarks ride on the scorer's forwards (`streams.pipeline.watermarks`), so a
terminal partition hears of a source only when a batch has transactions for it. Every
`streams.pipeline.watermarks.TICK_S` this task also sends each terminal partition a
forward message without rows that declares every source partition of this worker,
which keeps quiet terminal partitions current and carries what only the consumer knows:
a source partition read to its end (processed position at its high watermark) is
declared idle: it holds no reader back until it has events again.

Positions and high watermarks are read as the lag metric reads them
(``streams.stall.read_states``): one broker request per tick, nothing per event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streams.pipeline.forwards import encode_forwards
from streams.pipeline.outputs import Send
from streams.pipeline.watermarks import TICK_S, SourceClock
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
) -> None:
    """Declare this worker's source watermarks to every terminal partition, forever.

    Nothing is read while a rebalance is under way (positions are being sought); a
    failed reading (a broker outage) skips the tick.
    """
    while True:
        await asyncio.sleep(interval_s)
        if app.rebalancing:
            continue
        assigned = {tp for tp in source_partitions(app) if tp.topic == transactions}
        generation = clock.generation
        try:
            states = await read_states(app.consumer, assigned)
        except Exception as exc:  # a broker outage: reported elsewhere
            logger.debug("watermark tick skipped: %r", exc)
            continue
        if app.rebalancing:
            continue
        sources: list[int] = []
        for tp, state in states.items():
            clock.set_idle(tp.partition, state.position >= state.highwater, generation)
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
