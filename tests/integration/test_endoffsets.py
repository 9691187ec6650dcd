"""The end offset reader against the real broker, and against none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams.endoffsets import EndOffsets
from streams.kafka import TopicSpec, client_options, ensure_topics
from streams.settings import Settings


async def _produce(settings: Settings, topic: str, counts: dict[int, int]) -> None:
    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        sends = [
            await producer.send(topic, value=b"x", partition=partition)
            for partition, count in counts.items()
            for _ in range(count)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def test_reads_every_partitions_end_on_one_connection(settings: Settings) -> None:
    topic = settings.topic("ends")
    await ensure_topics(settings, [TopicSpec(topic, partitions=3)])
    reader = EndOffsets(settings, [TopicPartition(topic, p) for p in range(3)])
    try:
        assert await reader.read() == {0: 0, 1: 0, 2: 0}
        await _produce(settings, topic, {0: 3, 2: 5})
        assert await reader.read() == {0: 3, 1: 0, 2: 5}
        await _produce(settings, topic, {1: 2})
        assert await reader.read() == {0: 3, 1: 2, 2: 5}
    finally:
        await reader.close()
    # Closed, it opens a new connection for the next reading.
    try:
        assert await reader.read() == {0: 3, 1: 2, 2: 5}
    finally:
        await reader.close()


async def test_an_unreachable_broker_fails_a_reading_within_its_timeout(
    settings: Settings, free_port: Callable[[], int]
) -> None:
    nowhere = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    reader = EndOffsets(nowhere, [TopicPartition("any", 0)], timeout_s=1.0)
    for _ in range(2):  # a failed start is tried again by the next reading
        began = time.monotonic()
        with pytest.raises((KafkaError, TimeoutError)):
            await reader.read()
        assert time.monotonic() - began < 5.0
    await reader.close()
