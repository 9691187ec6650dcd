"""Hand an agent its topic's fetched records in micro-batches, without a Faust event each.

Upstream: faust-streaming 0.15.3. For the topics routed here, this module takes the
place of the conductor's delivery (``faust/transport/conductor.py``,
``ConductorCompiler.build``: an Event per message on each channel's queue, with the
queue-pressure callbacks), of the stream's iteration (``faust/_cython/streams.pyx``,
``StreamIterator.next``, ``_prepare_event`` and ``after``; ``faust/streams.py``,
``Stream.take_events``) and of the consumer's acknowledgement (``Consumer.ack``, whose
body `acknowledge` mirrors for a whole batch under one lock). It uses the consumer's
pending-ack bookkeeping (``_unacked_messages``, ``_acked``, ``_acked_index``,
``_committed_offset``, ``_n_acked``, ``_waiting_for_ack``), its partition pause for a
full buffer (``on_buffer_full``, ``on_buffer_drop``), the app's flow control
(``app.flow_control``: ``is_active``, ``manage_queue``) and generation id
(``app.consumer_generation_id``, as ``Consumer._to_message`` stamps each message).
``tests/unit/faustcompat/test_rawbatches_contract.py`` fails when any of them changes.

Why: every fetched record went through an Event, a channel queue, the stream's
iterator with its processors and sensors, and a task switch between the fetch loop and
the stream's passive drainer, before the agent took it into a micro-batch of hundreds
anyway. On a pre-loaded backlog that machinery was about a quarter of the worker's CPU
(py-spy: the conductor's ``on_message``, ``Stream._c_aiter``, ``_passive_drainer``,
``Event.__init__``, ``Consumer.ack``, the take buffer's waits), paid twice per
transaction (the transaction, then its forward to the terminal agent).

What is kept of Faust's semantics:

- **Acknowledgement.** A record is tracked as pending (``_unacked_messages``) when its
  agent takes it, and acknowledged once the agent asks for its next batch, i.e. after
  the batch is processed, as ``take_events`` does: Faust commits only offsets below
  every pending record, and a rebalance waits for the batch in hand.
- **Rebalances.** While the flow is suspended the fetch loop delivers nothing here (the
  record is not marked read), the queue is cleared with Faust's own queues
  (``flow_control.manage_queue``), and a record of an older generation or taken while
  the flow is suspended is dropped unread, as the stream's ``_prepare_event`` drops it.
- **Back-pressure.** Once the queue holds ``high_water`` records, the partitions
  delivering are taken out of the fetch (``on_buffer_full``) until it is down to half
  (``on_buffer_drop``), as the conductor does at its queue's high pressure. The fetch
  loop itself never waits on a full queue: another agent's records (the terminal
  forwards a held transaction waits for) keep flowing.
- **The producer's buffer.** A record is not delivered while the producer's buffer is
  over its limit, as the conductor waits (``wait_until_producer_ebb``).

What is not: Faust's sensors (its monitor) are not told of these records, and no Faust
Event exists for them (nothing is ``current_event``); fraudstream's agents read and
write their tables with explicit positions (``streams.pipeline.tables``) and export
their own metrics. The monitor's one stamp the pipeline reads, ``message.time_in``, is
set here when the fetch loop hands the record over.

Batching: the agent takes everything queued, up to ``max_records``, as soon as a fetch
has been handed over (or ``max_records`` are waiting): no timer. Under a backlog the
batches fill while the agent works on the previous one; at live pace a record waits for
no batch to fill.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, Final

from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

#: Where an app keeps its routes: topic name -> its `RawBatches`.
_ROUTES_ATTRIBUTE: Final = "fraudstream_raw_batches"

#: Queue length, as a multiple of the batch size, at which partitions stop being fetched.
HIGH_WATER_BATCHES: Final = 8
#: Records accepted between two looks at the producer's buffer (`RawBatches.accepts`).
#: Its size costs a microsecond to read (a Faust settings lookup), as much as the rest of
#: a record's way to the queue; the buffer (Faust's ``send_soon``: changelog writes) is a
#: soft limit, which the fetch loop may now pass by at most this many records.
PRODUCER_CHECK_EVERY: Final = 32


class FetchedRecord:
    """One fetched record as an agent sees it: ``key``, ``value`` and Faust's ``message``.

    The three attributes the stages read of a Faust Event (``streams.pipeline.inputs``),
    without the Event.
    """

    __slots__ = ("key", "message", "value")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.key = message.key
        self.value = message.value


class RawBatches:
    """The queue between the fetch loop and one agent, for one topic.

    Args:
        app: The Faust app.
        topic: The topic whose records are delivered here instead of to Faust's streams.
        max_records: Most records per batch.
        high_water: Queue length at which the delivering partitions leave the fetch
            (default `HIGH_WATER_BATCHES` batches).
    """

    def __init__(
        self, app: Any, topic: str, *, max_records: int, high_water: int | None = None
    ) -> None:
        self.app = app
        self.topic = topic
        self.max_records = max_records
        self.high_water = high_water or max_records * HIGH_WATER_BATCHES
        self._queue: deque[Any] = deque()
        self._buffered: set[Any] = set()
        self._waiter: asyncio.Future[None] | None = None
        self._unchecked = 0  # records to accept before the producer's buffer is read again
        routes_of(app)[topic] = self
        app.flow_control.manage_queue(self)

    def __len__(self) -> int:
        return len(self._queue)

    # -- the fetch loop's side -----------------------------------------------------------

    def accepts(self, consumer: Any) -> bool:
        """Whether a message may be queued now: the flow runs and the producer has room.

        The producer's room is read every `PRODUCER_CHECK_EVERY` records, the flow for each.
        """
        if consumer.suspend_flow.is_set() or not self.app.flow_control.is_active():
            return False
        self._unchecked -= 1
        if self._unchecked > 0:
            return True
        buffer = self.app.producer.buffer
        if buffer.size <= buffer.max_messages:
            self._unchecked = PRODUCER_CHECK_EVERY
            return True
        self._unchecked = 0
        return False

    async def room(self, consumer: Any) -> bool:
        """Wait until `accepts`; False when a rebalance suspends the flow first."""
        app = self.app

        async def flow_and_producer() -> None:
            await app.flow_control.acquire()
            await app.producer.buffer.wait_until_ebb()

        waiting = flow_and_producer()
        raced = await consumer.wait_first(waiting, consumer.suspend_flow.wait())
        return waiting in raced.done and not consumer.suspend_flow.is_set()

    def put(self, consumer: Any, tp: Any, message: Any) -> None:
        """Queue a fetched message (after `accepts` or `room`)."""
        message.time_in = time.monotonic()
        queue = self._queue
        queue.append(message)
        if len(queue) >= self.high_water and tp not in self._buffered:
            # Faust's own TP: the fetch loop's is aiokafka's TopicPartition, which
            # the consumer's active-partition set refuses.
            tp = TP(tp.topic, tp.partition)
            self._buffered.add(tp)
            consumer.on_buffer_full(tp)
        if len(queue) >= self.max_records:
            self._wake()

    def delivered(self) -> None:
        """The fetch loop has handed over a whole fetch: the agent may take it."""
        if self._queue:
            self._wake()

    def clear(self) -> None:
        """Drop every queued record (Faust's flow control, at a rebalance)."""
        self._queue.clear()
        self._resume_fetching()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the agent's side ----------------------------------------------------------------

    async def batches(self, channel: Any) -> AsyncIterator[list[FetchedRecord]]:
        """The agent's micro-batches; each is acknowledged when the next is asked for.

        Args:
            channel: The agent stream's channel (``stream.channel``): iterating it
                subscribes the consumer to the topic, as the stream's own iteration
                would (``Topic.__aiter__`` adds it to the conductor).
        """
        aiter(channel)
        while True:
            batch = await self._take()
            if not batch:
                continue
            yield batch
            acknowledge(self.app.consumer, (record.message for record in batch))

    async def _take(self) -> list[FetchedRecord]:
        if not self._queue:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        app = self.app
        queue = self._queue
        count = min(len(queue), self.max_records)
        messages = [queue.popleft() for _ in range(count)]
        if self._buffered and len(queue) <= self.high_water // 2:
            self._resume_fetching()
        generation = app.consumer_generation_id
        if not app.flow_control.is_active():
            return []  # a rebalance began: read again after its seek
        track = app.consumer._unacked_messages.add
        batch = []
        for message in messages:
            if message.generation_id != generation:
                continue  # fetched before the last rebalance: read again after its seek
            message.tracked = True
            track(message)
            batch.append(FetchedRecord(message))
        return batch

    def _resume_fetching(self) -> None:
        if self._buffered:
            consumer = self.app.consumer
            for tp in self._buffered:
                consumer.on_buffer_drop(tp)
            self._buffered.clear()


def routes_of(app: Any) -> dict[str, RawBatches]:
    """The topics of ``app`` delivered as raw batches, and their queues (read by the fetch loop)."""
    routes: dict[str, RawBatches] | None = getattr(app, _ROUTES_ATTRIBUTE, None)
    if routes is None:
        routes = {}
        setattr(app, _ROUTES_ATTRIBUTE, routes)
    return routes


def acknowledge(consumer: Any, messages: Iterable[Any]) -> None:
    """Acknowledge processed messages: Faust's ``Consumer.ack`` for each, under one lock."""
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    committed_offsets = consumer._committed_offset
    acked_indexes = consumer._acked_index
    acked_lists = consumer._acked
    unacked = consumer._unacked_messages
    acked = 0
    with ack_lock:
        for message in messages:
            if message.acked:
                continue
            message.acked = True
            tp = message.tp
            offset = message.offset
            if not acks_enabled_for(message.topic):
                continue
            committed = committed_offsets[tp]
            if committed is None or offset >= committed:
                acked_index = acked_indexes[tp]
                if offset not in acked_index:
                    unacked.discard(message)
                    acked_index.add(offset)
                    acked_lists[tp].append(offset)
                    acked += 1
        consumer._n_acked += acked
        notify(consumer._waiting_for_ack)
