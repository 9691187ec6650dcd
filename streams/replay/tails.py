"""Reads the last record of every partition of the event topics (the Kafka edge of resume).

One consumer without a group: for each partition its end offset and, when it is not
empty, the record just before it. ``streams.replay.resume`` decides from these where the
replay continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.kafka import client_options, header_items
from streams.replay.resume import Tail, Target, read_mark
from streams.settings import Settings


async def read_tails(
    settings: Settings,
    topics: Mapping[int, str],
    partitions: Mapping[int, int],
    timeout_s: float = 30.0,
) -> dict[Target, Tail]:
    """The tail of every partition of the topics, by (kind, partition).

    Args:
        settings: Connection settings.
        topics: Topic names by event kind.
        partitions: Partition counts by event kind.
        timeout_s: Give up after this long.

    Raises:
        KafkaError: The broker did not answer (``KafkaTimeoutError`` after ``timeout_s``).
    """
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=int(timeout_s * 1000),
        **client_options(settings),
    )
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            with _quiet():
                return await _tails(consumer, topics, partitions)
    except TimeoutError:
        raise KafkaError(f"could not read the ends of {', '.join(topics.values())}") from None
    finally:
        await consumer.stop()


async def _tails(
    consumer: AIOKafkaConsumer, topics: Mapping[int, str], partitions: Mapping[int, int]
) -> dict[Target, Tail]:
    kinds = {
        TopicPartition(topic, partition): kind
        for kind, topic in topics.items()
        for partition in range(partitions[kind])
    }
    consumer.assign(list(kinds))
    ends: dict[TopicPartition, int] = await consumer.end_offsets(list(kinds))
    tails: dict[Target, Tail] = {}
    wanted: set[TopicPartition] = set()
    for tp, end in ends.items():
        if end == 0:
            tails[(kinds[tp], tp.partition)] = Tail(0)
        else:
            consumer.seek(tp, end - 1)
            wanted.add(tp)
    while wanted:
        for tp, records in (await consumer.getmany(*wanted, timeout_ms=500)).items():
            for record in records:
                if record.offset == ends[tp] - 1:
                    tails[(kinds[tp], tp.partition)] = Tail(
                        ends[tp], read_mark(header_items(record.headers)), record.value
                    )
                    wanted.discard(tp)
    return tails


#: The consumer's loggers, and the level that keeps them quiet while the tails are read:
#: an INFO line per assignment, and an ERROR line per retry of an offset request that a
#: partition just created (or a broker just restarted) answers with "not leader yet".
_QUIET: Final = {
    "aiokafka.consumer.subscription_state": logging.WARNING,
    "aiokafka.consumer.fetcher": logging.CRITICAL,
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the tails' consumer out of the log: its retries are bounded by the timeout."""
    levels = {name: logging.getLogger(name).level for name in _QUIET}
    for name, level in _QUIET.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
