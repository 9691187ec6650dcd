"""The path streams.faustcompat.rejoin takes to aiokafka's group coordinator."""

from __future__ import annotations

import inspect

import aiokafka.consumer.consumer
from aiokafka.consumer.group_coordinator import GroupCoordinator, NoGroupCoordinator
from faust.transport.drivers import aiokafka as faust_aiokafka
from upstream import unstarted_app, upstream_source


async def test_fausts_consumer_reaches_the_aiokafka_consumer_through_its_thread() -> None:
    with unstarted_app("contract-rejoin") as app:
        thread = app.consumer._thread  # type: ignore[attr-defined]
        assert isinstance(thread, faust_aiokafka.AIOKafkaConsumerThread)
    ensure = faust_aiokafka.AIOKafkaConsumerThread._ensure_consumer
    assert list(inspect.signature(ensure).parameters) == ["self"]
    call_thread = faust_aiokafka.AIOKafkaConsumerThread.call_thread
    assert inspect.iscoroutinefunction(call_thread)
    assert list(inspect.signature(call_thread).parameters) == ["self", "fun", "args", "kwargs"]


def test_the_aiokafka_consumer_keeps_its_coordinator_which_can_be_asked_to_rejoin() -> None:
    start = upstream_source(aiokafka.consumer.consumer, "AIOKafkaConsumer.start")
    assert "self._coordinator = GroupCoordinator(" in start
    assert list(inspect.signature(GroupCoordinator.request_rejoin).parameters) == ["self"]
    rejoin = upstream_source(aiokafka.consumer.group_coordinator, "GroupCoordinator.request_rejoin")
    assert "self._rejoin_needed_fut.set_result(None)" in rejoin
    # A worker always has a group: the coordinator without one cannot rejoin.
    assert not hasattr(NoGroupCoordinator, "request_rejoin")
