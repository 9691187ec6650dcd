"""Cluster metadata that Faust's producer and aiokafka's consumer hold but do not publish.

Upstream:

- faust-streaming 0.15.3, ``faust/transport/drivers/aiokafka.py``,
  ``Producer._ensure_producer()``: the started ``aiokafka.AIOKafkaProducer`` of Faust's
  producer (``NotReady`` before it started). Its ``client.cluster`` (aiokafka 0.14.0,
  ``aiokafka/cluster.py``, ``ClusterMetadata.partitions_for_topic``) is the metadata
  the producer's default partitioner chooses from; `producer_partitions` reads it, so
  that the pipeline can compute the partition of a keyed output as the producer will,
  without a request.
- aiokafka 0.14.0, ``aiokafka/consumer/consumer.py``, ``AIOKafkaConsumer._client`` and
  ``aiokafka/client.py``, ``AIOKafkaClient.fetch_all_metadata()``: metadata of every
  topic. ``AIOKafkaConsumer.topics()`` sends the same request but keeps only the names;
  asking for one topic by name could make a broker that allows it create the topic.
  `all_topics_metadata` returns the whole ``ClusterMetadata``.

``tests/unit/faustcompat/test_metadata_contract.py`` fails when one of them changes.
"""

from __future__ import annotations

from typing import Any


def producer_partitions(producer: Any, topic: str) -> set[int] | None:
    """The partitions of ``topic`` in the metadata of Faust's started ``producer``.

    None (or empty) while the producer has no metadata of the topic.
    """
    cluster = producer._ensure_producer().client.cluster
    partitions: set[int] | None = cluster.partitions_for_topic(topic)
    return partitions


async def all_topics_metadata(consumer: Any) -> Any:
    """The cluster metadata of every topic, fetched by a started ``AIOKafkaConsumer``."""
    return await consumer._client.fetch_all_metadata()
