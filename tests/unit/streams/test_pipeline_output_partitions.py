"""OutputPartitions: keyed outputs go where the producer's default partitioner sends them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.pipeline import OutputPartitions


class Cluster:
    """The producer metadata OutputPartitions reads: partitions per topic."""

    def __init__(self, topics: dict[str, int]) -> None:
        self.topics = topics

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.topics.get(topic)
        return None if count is None else set(range(count))


def app_with(cluster: Cluster) -> Any:
    producer = SimpleNamespace(client=SimpleNamespace(cluster=cluster))
    return SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))


def test_keys_get_the_default_partitioners_choice() -> None:
    cluster = Cluster({"scores": 6, "alerts": 3})
    partition_of = OutputPartitions(app_with(cluster))
    keys = [f"C{i:07d}".encode() for i in range(500)]
    for topic, count in cluster.topics.items():
        expected = [DefaultPartitioner()(k, list(range(count)), []) for k in keys]
        assert [partition_of(topic, k) for k in keys] == expected
        assert [partition_of(topic, k) for k in keys] == expected  # memoised: the same
    assert len({partition_of("scores", k) for k in keys}) == 6


def test_an_unknown_topic_leaves_the_choice_to_the_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(OutputPartitions, "REFRESH_S", 0.0)
    cluster = Cluster({})
    partition_of = OutputPartitions(app_with(cluster))
    assert partition_of("scores", b"C1") is None
    cluster.topics["scores"] = 4  # the producer learnt about it
    assert partition_of("scores", b"C1") == DefaultPartitioner()(b"C1", [0, 1, 2, 3], [])


def test_a_topic_that_grows_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OutputPartitions, "REFRESH_S", 0.0)
    cluster = Cluster({"scores": 2})
    partition_of = OutputPartitions(app_with(cluster))
    keys = [f"C{i}".encode() for i in range(200)]
    before = [partition_of("scores", k) for k in keys]
    assert set(before) == {0, 1}
    cluster.topics["scores"] = 12
    after = [partition_of("scores", k) for k in keys]
    assert after == [DefaultPartitioner()(k, list(range(12)), []) for k in keys]
    assert max(p or 0 for p in after) > 1
