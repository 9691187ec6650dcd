"""streams.drain: a message is delivered directly only when its delivery cannot wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.consumer import Consumer
from faust.types import TP

from streams import drain
from streams.app import create_app
from streams.settings import Settings

TOPIC = "drain-transactions"
TP0 = TP(TOPIC, 0)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[faust.App]:
    """A worker app (never started) whose conductor routes TP0 to one stream buffer of 2."""
    app = create_app(Settings(local_dir=tmp_path, app_id="drain-test"), stream_buffer_maxsize=2)
    channel = app.topic(TOPIC).clone()  # as an agent's stream iterates it
    app.topics._tp_index[TP0].add(channel)  # type: ignore[attr-defined]  # as an assignment does
    app.flow_control.resume()  # Faust suspends the flow until partitions are assigned
    yield app
    app.consumer._thread.thread_loop.close()  # type: ignore[attr-defined]  # never started


def channel_queue(app: faust.App) -> Any:
    (channel,) = app.topics._tp_index[TP0]  # type: ignore[attr-defined]
    return channel.queue


async def test_a_delivery_with_room_and_flow_goes_directly(app: faust.App) -> None:
    assert drain.delivers_at_once(app.consumer, TP0)


async def test_a_suspended_flow_takes_fausts_race(app: faust.App) -> None:
    app.flow_control.suspend()
    assert not drain.delivers_at_once(app.consumer, TP0)
    app.flow_control.resume()
    app.consumer.suspend_flow.set()  # type: ignore[attr-defined]  # a rebalance began
    assert not drain.delivers_at_once(app.consumer, TP0)


async def test_a_full_stream_buffer_takes_fausts_race(app: faust.App) -> None:
    queue = channel_queue(app)
    queue.put_nowait(object())
    assert drain.delivers_at_once(app.consumer, TP0)
    queue.put_nowait(object())
    assert queue.full()
    assert not drain.delivers_at_once(app.consumer, TP0)


async def test_a_conductor_rebuilding_its_index_takes_fausts_race(app: faust.App) -> None:
    async with app.topics._tp_to_callback_lock:  # type: ignore[attr-defined]
        assert not drain.delivers_at_once(app.consumer, TP0)
    assert drain.delivers_at_once(app.consumer, TP0)


async def test_a_producer_buffer_over_its_limit_takes_fausts_race(app: faust.App) -> None:
    buffer = app.producer.buffer
    buffer.max_messages = 0
    buffer.pending.put_nowait(object())
    assert not drain.delivers_at_once(app.consumer, TP0)


async def test_a_partition_without_streams_takes_fausts_race(app: faust.App) -> None:
    assert not drain.delivers_at_once(app.consumer, TP(TOPIC, 1))


async def test_a_conductor_without_the_expected_internals_takes_fausts_race(
    app: faust.App,
) -> None:
    del app.topics._tp_index  # type: ignore[attr-defined]  # a future Faust's conductor
    assert not drain.delivers_at_once(app.consumer, TP0)


def test_create_app_installs_the_loop_once(tmp_path: Path) -> None:
    create_app(Settings(local_dir=tmp_path, app_id="drain-1"))
    installed = Consumer._drain_messages
    assert installed is drain.drain_messages
    drain.install()
    assert Consumer._drain_messages is installed
