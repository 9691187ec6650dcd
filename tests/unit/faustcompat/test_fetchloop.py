"""streams.faustcompat.fetchloop: a message is delivered directly only when its delivery
cannot wait, and marked read only once delivered."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from mode import Service

from streams.app import create_app
from streams.faustcompat import fetchloop, rawbatches
from streams.settings import Settings

TOPIC = "drain-transactions"
TP0 = TP(TOPIC, 0)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[faust.App]:
    """A worker app (never started) whose conductor routes TP0 to one stream buffer of 2."""
    app = create_app(Settings(local_dir=tmp_path, app_id="fetchloop-test"), stream_buffer_maxsize=2)
    channel = app.topic(TOPIC).clone()  # as an agent's stream iterates it
    app.topics._tp_index[TP0].add(channel)  # type: ignore[attr-defined]  # as an assignment does
    app.flow_control.resume()  # Faust suspends the flow until partitions are assigned
    yield app
    app.consumer._thread.thread_loop.close()  # type: ignore[attr-defined]  # never started


def channel_queue(app: faust.App) -> Any:
    (channel,) = app.topics._tp_index[TP0]  # type: ignore[attr-defined]
    return channel.queue


async def test_a_delivery_with_room_and_flow_goes_directly(app: faust.App) -> None:
    assert fetchloop.delivers_at_once(app.consumer, TP0)


async def test_a_suspended_flow_takes_fausts_race(app: faust.App) -> None:
    app.flow_control.suspend()
    assert not fetchloop.delivers_at_once(app.consumer, TP0)
    app.flow_control.resume()
    app.consumer.suspend_flow.set()  # type: ignore[attr-defined]  # a rebalance began
    assert not fetchloop.delivers_at_once(app.consumer, TP0)


async def test_a_full_stream_buffer_takes_fausts_race(app: faust.App) -> None:
    queue = channel_queue(app)
    queue.put_nowait(object())
    assert fetchloop.delivers_at_once(app.consumer, TP0)
    queue.put_nowait(object())
    assert queue.full()
    assert not fetchloop.delivers_at_once(app.consumer, TP0)


async def test_a_conductor_rebuilding_its_index_takes_fausts_race(app: faust.App) -> None:
    async with app.topics._tp_to_callback_lock:  # type: ignore[attr-defined]
        assert not fetchloop.delivers_at_once(app.consumer, TP0)
    assert fetchloop.delivers_at_once(app.consumer, TP0)


async def test_a_producer_buffer_over_its_limit_takes_fausts_race(app: faust.App) -> None:
    buffer = app.producer.buffer
    buffer.max_messages = 0
    buffer.pending.put_nowait(object())
    assert not fetchloop.delivers_at_once(app.consumer, TP0)


async def test_a_partition_without_streams_takes_fausts_race(app: faust.App) -> None:
    assert not fetchloop.delivers_at_once(app.consumer, TP(TOPIC, 1))


async def test_a_conductor_without_the_expected_internals_takes_fausts_race(
    app: faust.App,
) -> None:
    del app.topics._tp_index  # type: ignore[attr-defined]  # a future Faust's conductor
    assert not fetchloop.delivers_at_once(app.consumer, TP0)


def test_create_app_installs_the_loop_once(tmp_path: Path) -> None:
    create_app(Settings(local_dir=tmp_path, app_id="fetchloop-1"))
    installed = Consumer._drain_messages
    assert installed is fetchloop.drain_messages
    fetchloop.install()
    assert Consumer._drain_messages is installed


class LoopConsumer:
    """What `fetchloop.drain_messages` reads of a Faust consumer, around one fetched message."""

    wait_first = Service.wait_first
    consumer_stopped_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, deliver: Callable[[Any], Awaitable[None]]) -> None:
        self.callback = deliver
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._crashed = asyncio.Event()
        self.suspend_flow = asyncio.Event()
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self._commit_every = None
        self.app = SimpleNamespace(
            topics=SimpleNamespace(acks_enabled_for=lambda topic: False), client_only=False
        )
        self.flow_active = True
        self.should_stop = False
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())
        self.log = logging.getLogger("test-drain")

    def _get_active_partitions(self) -> set[TP]:
        return {TP0}

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        yield TP0, SimpleNamespace(topic=TOPIC, offset=7, key=b"k", value=b"v")
        self.fetcher._stopped.set()  # one fetch, then the loop ends


@pytest.fixture
def fausts_race(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every delivery takes Faust's race against ``suspend_flow``."""
    monkeypatch.setattr(fetchloop, "delivers_at_once", lambda consumer, tp: False)


@pytest.mark.usefixtures("fausts_race")
async def test_a_delivery_abandoned_at_a_rebalance_is_not_marked_read() -> None:
    async def blocked(message: Any) -> None:  # a full stream buffer, never drained
        consumer.suspend_flow.set()  # meanwhile a rebalance suspends the flow
        await asyncio.Event().wait()

    consumer = LoopConsumer(blocked)
    await fetchloop.drain_messages(consumer, consumer.fetcher)
    assert consumer._read_offset[TP0] is None


@pytest.mark.usefixtures("fausts_race")
async def test_a_delivered_message_is_marked_read() -> None:
    delivered: list[Any] = []

    async def deliver(message: Any) -> None:
        delivered.append(message)

    consumer = LoopConsumer(deliver)
    consumer.suspend_flow.clear()
    await fetchloop.drain_messages(consumer, consumer.fetcher)
    assert [m.offset for m in delivered] == [7]
    assert consumer._read_offset[TP0] == 7


class StubRoute:
    """A raw-batch queue (streams.faustcompat.rawbatches) as the fetch loop uses one."""

    def __init__(self, *, accepts: bool, room: bool) -> None:
        self._accepts = accepts
        self._room = room
        self.put_messages: list[Any] = []
        self.deliveries = 0

    def accepts(self, consumer: Any) -> bool:
        return self._accepts

    async def room(self, consumer: Any) -> bool:
        return self._room

    def put(self, consumer: Any, tp: TP, message: Any) -> None:
        self.put_messages.append(message)

    def delivered(self) -> None:
        self.deliveries += 1


async def test_a_raw_topics_message_goes_to_its_queue_not_to_faust() -> None:
    async def never(message: Any) -> None:
        raise AssertionError("delivered to Faust's streams")

    consumer = LoopConsumer(never)
    route = StubRoute(accepts=True, room=True)
    rawbatches.routes_of(consumer.app)[TOPIC] = route  # type: ignore[assignment]  # a stub
    await fetchloop.drain_messages(consumer, consumer.fetcher)
    assert [m.offset for m in route.put_messages] == [7]
    assert route.deliveries == 1  # the whole fetch handed over: the agent may take it
    assert consumer._read_offset[TP0] == 7


async def test_a_raw_message_refused_at_a_rebalance_is_not_marked_read() -> None:
    consumer = LoopConsumer(lambda message: asyncio.sleep(0))
    route = StubRoute(accepts=False, room=False)  # the flow was suspended while waiting
    rawbatches.routes_of(consumer.app)[TOPIC] = route  # type: ignore[assignment]  # a stub
    await fetchloop.drain_messages(consumer, consumer.fetcher)
    assert route.put_messages == []
    assert consumer._read_offset[TP0] is None
