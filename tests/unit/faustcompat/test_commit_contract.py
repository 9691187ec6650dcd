"""Faust's commit of chosen offsets, which streams.faustcompat.commit calls."""

from __future__ import annotations

import inspect

import faust.transport.consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from upstream import is_mapping, upstream_source


def test_the_consumer_commits_chosen_offsets_through_its_thread() -> None:
    commit = faust_aiokafka.Consumer._commit
    assert inspect.iscoroutinefunction(commit)
    assert list(inspect.signature(commit).parameters) == ["self", "offsets"]
    assert is_mapping(inspect.signature(commit).parameters["offsets"].annotation, TP, int)
    assert inspect.signature(commit).return_annotation is bool
    assert "return await self._thread.commit(offsets)" in upstream_source(
        faust.transport.consumer, "ThreadDelegateConsumer._commit"
    )


def test_the_thread_commits_assigned_partitions_and_says_false_after_a_rebalance() -> None:
    thread_commit = upstream_source(faust_aiokafka, "AIOKafkaConsumerThread._commit")
    assert "if tp in self.assignment()" in thread_commit
    assert "await consumer.commit(aiokafka_offsets)" in thread_commit
    assert '"already rebalanced" in str(exc)' in thread_commit
    assert "return True" in thread_commit
