"""aiokafka against the real broker: declared topics and their configs, produce, consume,
exactly what went in."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import UnknownTopicOrPartitionError
from topic_configs import set_topic_configs, topic_configs

from streams.kafka import (
    BATCH_HEADROOM,
    TopicSpec,
    client_options,
    describe_topic_configs,
    ensure_topics,
    producer_batch_bytes,
    product_topics,
)
from streams.settings import Settings


async def test_declares_product_topics_with_configured_partitions(settings: Settings) -> None:
    created = await ensure_topics(settings, product_topics(settings))
    assert sorted(created) == sorted(settings.topic_names.values())
    assert await ensure_topics(settings, product_topics(settings)) == []  # idempotent

    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics(list(settings.topic_names.values()))
    finally:
        await admin.close()
    control = settings.topic_names["model_control"]
    assert {t["topic"]: len(t["partitions"]) for t in described} == {
        name: 1 if name == control else settings.topic_partitions
        for name in settings.topic_names.values()
    }


async def test_produce_consume_round_trip(settings: Settings) -> None:
    topic = settings.topic("roundtrip")
    await ensure_topics(settings, [TopicSpec(topic, partitions=3)])
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(100)}

    producer = AIOKafkaProducer(enable_idempotence=True, **client_options(settings))
    await producer.start()
    try:
        batch = [producer.send(topic, value=v, key=k) for k, v in sent.items()]
        await asyncio.gather(*batch)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        group_id=f"{settings.app_id}-roundtrip",
        auto_offset_reset="earliest",
        **client_options(settings),
    )
    await consumer.start()
    received: dict[bytes, bytes] = {}
    partitions_by_key: dict[bytes, set[int]] = {}
    try:
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                    for message in messages:
                        assert message.key is not None
                        assert message.value is not None
                        assert message.key not in received, "a message arrived twice"
                        received[message.key] = message.value
                        partitions_by_key.setdefault(message.key, set()).add(tp.partition)
    finally:
        await consumer.stop()
    assert received == sent
    assert {p for ps in partitions_by_key.values() for p in ps} == {0, 1, 2}


async def test_topic_configs_are_asked_again_until_a_broker_knows_the_topic(
    settings: Settings,
) -> None:
    """A topic a broker does not know yet (as on a cluster, a moment after it was created
    through another broker) is asked again; one that never comes is answered with the
    broker's error after the wait."""
    late = settings.topic("late")
    never = settings.topic("never")
    wanted = ("retention.ms", "cleanup.policy")
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        (missing,) = await describe_topic_configs(admin, [never], wanted, known_within_s=0.5)
        assert loop.time() - started >= 0.5
        assert missing.name == never
        assert missing.error_code == UnknownTopicOrPartitionError.errno
        assert missing.configs == {}

        async def create_later() -> None:
            await asyncio.sleep(0.5)
            await ensure_topics(settings, [TopicSpec(late, 1, config={"retention.ms": "-1"})])

        creating = asyncio.create_task(create_later())
        (found,) = await describe_topic_configs(admin, [late], wanted, known_within_s=30)
        await creating
    finally:
        await admin.close()
    assert (found.name, found.error_code) == (late, 0)
    assert found.configs == {"retention.ms": "-1", "cleanup.policy": "delete"}


async def test_producer_batches_stay_under_the_smallest_topic_limit(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A topic an operator limited (max.message.bytes) lowers the worker's record batches,
    which the broker would otherwise refuse for good, stopping the worker."""
    await ensure_topics(settings, product_topics(settings))
    assert await producer_batch_bytes(settings) == settings.producer_batch_bytes == 524_288

    alerts = settings.topic_names["alerts"]
    await set_topic_configs(settings, alerts, {"max.message.bytes": "200000"})
    for _ in range(200):  # the broker applies an altered config asynchronously
        if (await topic_configs(settings, alerts)).get("max.message.bytes") == "200000":
            break
        await asyncio.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="streams.kafka"):
        assert await producer_batch_bytes(settings) == 200_000 - BATCH_HEADROOM
    assert f"topic {alerts} takes record batches of at most 200000 bytes" in caplog.text

    # A setting already under every limit is kept.
    small = settings.model_copy(update={"producer_batch_bytes": 100_000})
    assert await producer_batch_bytes(small) == 100_000
