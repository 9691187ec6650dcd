"""The seek streams.faustcompat.seek replaces, and the Faust calls that reach it."""

from __future__ import annotations

import inspect

import faust.tables.recovery
import faust.transport.consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from upstream import assert_unchanged, is_mapping, unstarted_app, upstream_source

from streams.faustcompat import seek

CONSUMER = faust_aiokafka.Consumer


def test_fausts_seek_after_a_rebalance_is_the_one_wrapped() -> None:
    """What it does is what streams.tablestore.resume builds on (the committed offsets,
    both offset maps): a change must be read before it is trusted."""
    assert_unchanged(
        faust.transport.consumer,
        "Consumer.perform_seek",
        "d3e8527bdb7197005caf1821342c7fa0d3ea89a8ea3994e7b1ab6913377e6f5c",
        "streams/faustcompat/seek.py and streams/tablestore/resume.py",
    )
    assert inspect.iscoroutinefunction(CONSUMER.perform_seek)
    assert list(inspect.signature(CONSUMER.perform_seek).parameters) == ["self"]


def test_faust_calls_it_through_the_consumer_instance() -> None:
    """An instance attribute replaces it only because every caller looks it up there."""
    recovery = faust.tables.recovery
    for method in ("Recovery._resume_streams", "Recovery.on_recovery_completed"):
        assert "consumer.perform_seek()" in upstream_source(recovery, method), method
    getmany = upstream_source(faust.transport.consumer, "Consumer.getmany")
    assert "await self.perform_seek()" in getmany
    callers = inspect.getsource(recovery) + inspect.getsource(faust.transport.consumer)
    assert callers.count("perform_seek()") == 3  # no other caller to account for


def test_the_public_calls_the_seek_to_redis_makes_keep_their_shape() -> None:
    signature = inspect.signature
    assert list(signature(CONSUMER.seek_wait).parameters) == ["self", "partitions"]
    assert is_mapping(signature(CONSUMER.seek_wait).parameters["partitions"].annotation, TP, int)
    earliest = signature(CONSUMER.earliest_offsets).parameters["partitions"]
    assert earliest.kind is inspect.Parameter.VAR_POSITIONAL
    assert inspect.iscoroutinefunction(CONSUMER.seek_wait)
    assert inspect.iscoroutinefunction(CONSUMER.earliest_offsets)
    assert list(signature(CONSUMER.stop_flow).parameters) == ["self"]
    assert list(signature(CONSUMER.assignment).parameters) == ["self"]


async def test_the_wrapper_gets_fausts_own_seek_to_await() -> None:
    with unstarted_app("contract-seek") as app:
        consumer = app.consumer
        calls: list[str] = []

        async def faust_seek() -> None:
            calls.append("faust")

        consumer.perform_seek = faust_seek  # type: ignore[method-assign]  # Faust's, stood in for

        async def around(original: seek.FaustSeek) -> None:
            calls.append("before")
            await original()
            calls.append("after")

        seek.wrap_perform_seek(consumer, around)
        await consumer.perform_seek()
        assert calls == ["before", "faust", "after"]
