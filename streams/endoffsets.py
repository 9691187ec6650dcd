"""End offsets read on a Kafka connection of the worker's own, in its event loop.

The scorer reads the fraud-reports partitions' ends for the replayed transactions it
holds (`streams.pipeline.watermarks.ReportEnds`): a reading asked for after a
transaction arrived says which reports its terminal agents must have applied. Faust's
consumer can read them (``Consumer.highwaters``), but its aiokafka client runs in a
thread of its own and sends every request to a broker on the connection its fetches
use. A broker answers a connection's requests in order, so a ListOffsets sent while a
fetch waits there for ``fetch_min_bytes`` (up to ``fetch_max_wait_ms``) waits behind
it, and its answer crosses the threads twice: at the demo's pace (230 events/s) that
was half of the alerts' latency (p50 13 ms, against 7 ms with this reader). A consumer
without a group, in the event loop, answers on its own connection as soon as the broker
does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka import client_options
from streams.settings import Settings

#: Longest a reading (with the connection, the first time) may take: a broker that does
#: not answer makes its caller wait for the next reading, not for aiokafka's 40 s.
READ_TIMEOUT_S: Final = 5.0


class EndOffsets:
    """Reads the end offsets of fixed partitions; connects on the first reading.

    Args:
        settings: Connection and security settings (`client_options`).
        partitions: The partitions whose ends each reading returns.
        timeout_s: Longest a reading may take before it raises ``TimeoutError``.
    """

    def __init__(
        self,
        settings: Settings,
        partitions: Sequence[TopicPartition],
        timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._partitions = list(partitions)
        self._timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()

    async def read(self) -> dict[int, int]:
        """The end offset of each partition, by partition number.

        Raises:
            KafkaError: The broker refused or could not be reached.
            TimeoutError: No answer within the timeout.
        """
        async with asyncio.timeout(self._timeout_s):
            consumer = await self._started()
            ends = await consumer.end_offsets(self._partitions)
        return {tp.partition: int(end) for tp, end in ends.items()}

    async def _started(self) -> AIOKafkaConsumer:
        async with self._starting:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    group_id=None,
                    enable_auto_commit=False,
                    request_timeout_ms=int(self._timeout_s * 1000),
                    **client_options(self._settings),
                )
                try:
                    await consumer.start()
                except BaseException:
                    # Not started, or cancelled by the timeout: the next reading tries
                    # again with a new consumer.
                    with contextlib.suppress(Exception):
                        await consumer.stop()
                    raise
                self._consumer = consumer
            return self._consumer

    async def close(self) -> None:
        """Close the connection (a later reading opens a new one)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
