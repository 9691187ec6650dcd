"""The producer and consumer metadata streams.faustcompat.metadata reads."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import aiokafka
import aiokafka.client
import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata
from faust.exceptions import NotReady
from faust.transport.drivers import aiokafka as faust_aiokafka
from upstream import unstarted_app, upstream_source

from streams.faustcompat import metadata


async def test_fausts_producer_hands_out_its_aiokafka_producer_once_started() -> None:
    assert list(inspect.signature(faust_aiokafka.Producer._ensure_producer).parameters) == ["self"]
    with unstarted_app("contract-metadata") as app:
        assert isinstance(app.producer, faust_aiokafka.Producer)
        assert app.producer._producer_type is aiokafka.AIOKafkaProducer
        with pytest.raises(NotReady):
            metadata.producer_partitions(app.producer, "scores")


async def test_the_aiokafka_producer_partitions_from_its_clients_cluster_metadata() -> None:
    producer = aiokafka.AIOKafkaProducer()
    try:
        assert isinstance(producer.client, AIOKafkaClient)
        assert isinstance(producer.client.cluster, ClusterMetadata)
        # The default partitioner chooses among these (aiokafka/producer/producer.py).
        choice = upstream_source(aiokafka.producer.producer, "AIOKafkaProducer._partition")
        assert "self._metadata.partitions_for_topic(topic)" in choice
        assert "self._metadata = self.client.cluster" in upstream_source(
            aiokafka.producer.producer, "AIOKafkaProducer.__init__"
        )
        fake = SimpleNamespace(_ensure_producer=lambda: producer)
        assert metadata.producer_partitions(fake, "unknown") is None
    finally:
        await producer.stop()
    assert list(inspect.signature(ClusterMetadata.partitions_for_topic).parameters) == [
        "self",
        "topic",
    ]


async def test_the_aiokafka_consumer_fetches_every_topics_metadata_with_its_client() -> None:
    consumer = aiokafka.AIOKafkaConsumer()
    try:
        assert isinstance(consumer._client, AIOKafkaClient)
    finally:
        await consumer.stop()
    fetch = AIOKafkaClient.fetch_all_metadata
    assert inspect.iscoroutinefunction(fetch)
    assert list(inspect.signature(fetch).parameters) == ["self"]
    source = upstream_source(aiokafka.client, "AIOKafkaClient.fetch_all_metadata")
    assert "return cluster_md" in source
