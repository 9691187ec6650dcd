"""streams.faustcompat.rawbatches: fetched records reach the agent in order, in batches,
acknowledged only after their batch, never across a rebalance, with back-pressure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from upstream import unstarted_app

from streams.faustcompat.rawbatches import PRODUCER_CHECK_EVERY, RawBatches, routes_of

TOPIC = "raw-transactions"
TP0 = TP(TOPIC, 0)
TP1 = TP(TOPIC, 1)


@pytest.fixture
async def app() -> AsyncIterator[faust.App]:
    """An app never started, its flow running and its consumer holding TP0 and TP1."""
    with unstarted_app("rawbatches-test") as app:
        app.flow_control.resume()  # Faust suspends the flow until partitions are assigned
        app.consumer._active_partitions = {TP0, TP1}  # type: ignore[attr-defined]  # as assigned
        app.topics._acking_topics.add(TOPIC)  # type: ignore[attr-defined]  # as subscribed
        yield app


def message(app: faust.App, offset: int, tp: TP = TP0, generation: int | None = None) -> Any:
    return ConsumerMessage(
        tp.topic,
        tp.partition,
        offset,
        0.0,
        0,
        [],
        b"key",
        f"value-{offset}".encode(),
        None,
        tp=tp,
        generation_id=app.consumer_generation_id if generation is None else generation,
    )


def put(raw: RawBatches, app: faust.App, *offsets: int, tp: TP = TP0) -> list[Any]:
    messages = [message(app, offset, tp) for offset in offsets]
    for m in messages:
        raw.put(app.consumer, tp, m)
    return messages


async def next_batch(batches: AsyncIterator[Any], within_s: float = 1.0) -> list[Any]:
    batch: list[Any] = await asyncio.wait_for(anext(batches), within_s)
    return batch


def batches_of(raw: RawBatches, app: faust.App) -> AsyncIterator[Any]:
    return raw.batches(app.topic(TOPIC))


async def test_a_fetch_handed_over_is_one_batch_in_order(app: faust.App) -> None:
    raw = RawBatches(app, TOPIC, max_records=10)
    batches = batches_of(raw, app)
    taking = asyncio.ensure_future(next_batch(batches))
    await asyncio.sleep(0.01)  # the agent waits for records
    put(raw, app, 3, 4, 5)
    await asyncio.sleep(0.01)
    assert not taking.done()  # the fetch is still being handed over
    raw.delivered()
    batch = await taking
    assert [r.message.offset for r in batch] == [3, 4, 5]
    assert [r.value for r in batch] == [b"value-3", b"value-4", b"value-5"]
    assert all(r.key == b"key" and r.message.time_in is not None for r in batch)
    assert TOPIC in {topic.get_topic_name() for topic in app.topics}  # subscribed


async def test_a_batch_is_at_most_max_records_and_goes_when_full(app: faust.App) -> None:
    raw = RawBatches(app, TOPIC, max_records=2)
    batches = batches_of(raw, app)
    taking = asyncio.ensure_future(next_batch(batches))
    await asyncio.sleep(0.01)  # the agent waits for records
    put(raw, app, 0, 1, 2)  # full at two: no need to wait for the whole fetch
    assert [r.message.offset for r in await taking] == [0, 1]
    assert [r.message.offset for r in await next_batch(batches)] == [2]


async def test_records_are_acknowledged_only_when_the_next_batch_is_asked_for(
    app: faust.App,
) -> None:
    consumer: Any = app.consumer
    raw = RawBatches(app, TOPIC, max_records=10)
    batches = batches_of(raw, app)
    first = put(raw, app, 0, 1, tp=TP0) + put(raw, app, 0, tp=TP1)
    raw.delivered()
    await next_batch(batches)
    assert set(consumer._unacked_messages) == set(first)  # in hand: a rebalance waits
    assert not any(m.acked for m in first)
    assert consumer._acked[TP0] == []
    taking = asyncio.ensure_future(next_batch(batches))
    await asyncio.sleep(0.01)
    assert all(m.acked for m in first)
    assert consumer._acked[TP0] == [0, 1]
    assert consumer._acked[TP1] == [0]
    assert consumer._n_acked == 3
    assert not set(consumer._unacked_messages)
    taking.cancel()


async def test_a_record_of_an_older_generation_is_dropped_unread(app: faust.App) -> None:
    consumer: Any = app.consumer
    raw = RawBatches(app, TOPIC, max_records=10)
    batches = batches_of(raw, app)
    stale = message(app, 0, generation=app.consumer_generation_id - 1)
    raw.put(consumer, TP0, stale)
    put(raw, app, 1)
    raw.delivered()
    assert [r.message.offset for r in await next_batch(batches)] == [1]
    assert stale not in set(consumer._unacked_messages)


async def test_nothing_is_taken_while_the_flow_is_suspended(app: faust.App) -> None:
    consumer: Any = app.consumer
    raw = RawBatches(app, TOPIC, max_records=10)
    batches = batches_of(raw, app)
    taking = asyncio.ensure_future(next_batch(batches, within_s=0.2))
    put(raw, app, 0, 1)
    app.flow_control.suspend()  # a rebalance began before the agent took them
    raw.delivered()
    with pytest.raises(TimeoutError):
        await taking
    assert not set(consumer._unacked_messages)


async def test_a_rebalance_clears_the_queue(app: faust.App) -> None:
    raw = RawBatches(app, TOPIC, max_records=10)
    put(raw, app, 0, 1)
    app.flow_control.suspend()
    app.flow_control.clear()  # as Faust does when partitions are revoked
    assert len(raw) == 0


async def test_a_long_queue_takes_its_partitions_out_of_the_fetch_until_half_empty(
    app: faust.App,
) -> None:
    consumer: Any = app.consumer
    raw = RawBatches(app, TOPIC, max_records=2, high_water=4)
    batches = batches_of(raw, app)
    put(raw, app, 0, 1, 2)
    assert consumer._get_active_partitions() == {TP0, TP1}
    put(raw, app, 3)
    assert consumer._get_active_partitions() == {TP1}
    await next_batch(batches)  # 2 left: half of the high water
    assert consumer._get_active_partitions() == {TP0, TP1}
    assert all(isinstance(tp, TP) for tp in consumer._get_active_partitions())


async def test_the_flow_and_the_producer_decide_whether_a_record_is_accepted(
    app: faust.App,
) -> None:
    consumer: Any = app.consumer
    raw = RawBatches(app, TOPIC, max_records=10)
    buffer: Any = app.producer.buffer
    buffer.max_messages, limit = -1, buffer.max_messages  # over its limit
    assert not raw.accepts(consumer)
    buffer.max_messages = limit
    assert raw.accepts(consumer)
    # The producer's buffer is read every PRODUCER_CHECK_EVERY records: one filling up
    # is seen within that many.
    buffer.max_messages = -1
    accepted = 0
    while raw.accepts(consumer):
        accepted += 1
        assert accepted < PRODUCER_CHECK_EVERY
    assert not raw.accepts(consumer)  # and refused until it has room
    buffer.max_messages = limit
    consumer.suspend_flow.set()  # a rebalance began: seen at once
    assert not raw.accepts(consumer)
    assert not await asyncio.wait_for(raw.room(consumer), 1.0)


async def test_the_fetch_loop_finds_the_queues_of_its_app(app: faust.App) -> None:
    raw = RawBatches(app, TOPIC, max_records=10)
    routes = routes_of(app)
    assert routes == {TOPIC: raw}
    other = RawBatches(app, "raw-reports", max_records=10)
    assert routes_of(app) is routes  # the same mapping the running loop holds
    assert routes["raw-reports"] is other
