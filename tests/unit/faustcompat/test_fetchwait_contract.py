"""What streams.faustcompat.fetchwait wraps: Faust's hard-coded fetch wait, aiokafka's field."""

from __future__ import annotations

import inspect

import aiokafka.consumer.consumer
from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from upstream import upstream_source


def test_faust_still_hard_codes_the_fetch_wait_of_the_consumer_it_builds() -> None:
    """If Faust ever reads it from a setting, use the setting and drop the wrapper."""
    source = upstream_source(faust_aiokafka, "AIOKafkaConsumerThread._create_worker_consumer")
    assert "return aiokafka.AIOKafkaConsumer(" in source
    assert "fetch_max_wait_ms=1500," in source
    assert "fetch_min_bytes" not in source  # aiokafka's default, 1
    # Looked up on the instance, so the wrapper on the class is the one called.
    assert "return self._create_worker_consumer(transport)" in upstream_source(
        faust_aiokafka, "AIOKafkaConsumerThread._create_consumer"
    )
    signature = inspect.signature(faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer)
    assert list(signature.parameters) == ["self", "transport"]


async def test_aiokafka_hands_the_field_to_its_fetcher_when_it_starts() -> None:
    consumer = AIOKafkaConsumer(fetch_max_wait_ms=123, fetch_min_bytes=456)
    try:
        assert consumer._fetch_max_wait_ms == 123
        assert consumer._fetch_min_bytes == 456
    finally:
        await consumer.stop()
    start = upstream_source(aiokafka.consumer.consumer, "AIOKafkaConsumer.start")
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms," in start
    assert "fetch_min_bytes=self._fetch_min_bytes," in start
