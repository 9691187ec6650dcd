"""A Faust agent with a table, inside the test process, against the real broker.

It counts events per key into a table, exactly: every event once, none lost, none twice.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streams.app import create_app
from streams.kafka import TopicSpec, client_options, ensure_topics
from streams.settings import Settings

EVENTS = 600
KEYS = [f"customer-{i}" for i in range(7)]


STORES = ["memory://", "redis://", "redis://?changelog=true"]


@pytest.mark.parametrize("store", STORES)
async def test_agent_counts_events_per_key_in_a_table(settings: Settings, store: str) -> None:
    source = settings.topic("clicks")
    await ensure_topics(settings, [TopicSpec(source, settings.topic_partitions)])
    expected: Counter[str] = Counter()
    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        sends = []
        for i in range(EVENTS):
            key = KEYS[(i * i) % len(KEYS)]
            expected[key] += 1
            sends.append(producer.send(source, key=key.encode(), value=json.dumps(i).encode()))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()

    if store.startswith("redis://"):
        store = store.replace("redis://", settings.redis_url, 1)
    app = create_app(settings.model_copy(update={"table_store": store}), web_enabled=False)
    topic = app.topic(source, key_type=str)  # values: JSON, the default serializer
    counts = app.Table("counts", default=int, partitions=settings.topic_partitions)
    seen: list[Any] = []
    all_seen = asyncio.Event()

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for key, value in stream.items():
            counts[key] += 1
            seen.append(value)
            if len(seen) >= EVENTS:
                all_seen.set()

    await app.start()
    try:
        async with asyncio.timeout(60):
            await all_seen.wait()
        await asyncio.sleep(0.5)  # anything beyond EVENTS would be a duplicate
    finally:
        await app.stop()

    assert sorted(seen) == list(range(EVENTS))
    assert dict(counts.items()) == dict(expected)
