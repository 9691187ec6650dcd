"""Hand fetched messages to the streams without an event-loop round per message.

Upstream: faust-streaming 0.15.3, ``faust/transport/consumer.py``,
``Consumer._drain_messages`` (replaced on the class by `install`, the loop mirrored in
`drain_messages`), and ``faust/transport/conductor.py``, ``Conductor._tp_index`` and
``Conductor._tp_to_callback_lock`` (read by `delivers_at_once`, whose conditions come
from the conductor's delivery: ``ConductorCompiler.build`` and its Cython twin
``faust/transport/_cython/conductor.pyx``, ``ConductorHandler.__call__``); the loop also
reads mode-streaming's ``Service._stopped`` of the consumer and of the fetcher, as
Faust's does.
``tests/unit/faustcompat/test_fetchloop_contract.py`` fails when any of them changes.

faust-streaming's fetch loop (``Consumer._drain_messages``) delivers every message as
``await self.wait_first(callback(message), self.suspend_flow.wait())``: two new tasks and
an ``asyncio.wait`` per message, so that a delivery blocked on a full stream buffer can
be abandoned when a rebalance suspends the flow. Each message then costs a turn of the
event loop. Measured on a worker at 2,900 transactions/s (about 6,000 messages/s with the
forwards to the terminal agents): those turns were an eighth of the worker's CPU, and a
fetch of a few hundred records waited, record after record, behind every other task
that got the loop in between, so transactions sat in the fetcher for hundreds of
milliseconds while the worker had CPU to spare.

The conductor's delivery (``faust.transport.conductor``) can only block in four places:
flow control suspended (a rebalance), the producer's buffer over its limit, a stream
buffer full, and the conductor's lock held while it rebuilds its index. When none of
those holds, the delivery completes without suspending, so awaiting it directly is the
same as racing it against ``suspend_flow``, minus the tasks. This module's loop does
that, and keeps Faust's race for every message for which one of them does hold. The
rest of the loop is faust-streaming 0.15's (read-offset tracking, gap tracking for
acks, a yield to the loop every 100 messages) but for two things. With no partition
active it looks again every `IDLE_POLL_S`, where Faust's getmany sleeps a second (in
the takeover test, 18 of 100 rebalances resumed about a second late before, 1 of 40
after). And a message whose delivery was abandoned because the flow was suspended is
not marked read: Faust's loop set the read offset after ``wait_first`` whichever of the
two won, so a message that never reached a stream counted as read, and if that landed
after the rebalance's seek, the fetch loop then dropped every message before it as
already read.

The topics of the pipeline's agents skip the conductor altogether: their messages go to
the agent's raw-batch queue (``streams.faustcompat.rawbatches``), under the same flow
and producer conditions, and each queue is told when a whole fetch has been handed over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from faust.types import TP

from streams.faustcompat import rawbatches

_INSTALLED = "_fraudstream_drain"
#: How often the loop looks again for an active partition when none is.
IDLE_POLL_S = 0.02


def install() -> None:
    """Use `drain_messages` as every Faust consumer's fetch loop (once per process)."""
    if getattr(Consumer._drain_messages, _INSTALLED, False):
        return
    setattr(drain_messages, _INSTALLED, True)
    Consumer._drain_messages = drain_messages  # type: ignore[method-assign]


def delivers_at_once(consumer: Any, tp: TP) -> bool:
    """Whether the conductor's delivery of a message of ``tp`` cannot suspend now.

    False whenever one of the conditions under which it may wait holds (see the module
    docstring), or when the conductor does not look as expected (then Faust's own path
    is taken: slower, never wrong).
    """
    if consumer.suspend_flow.is_set():
        return False
    app = consumer.app
    if not app.flow_control.is_active():
        return False
    buffer = app.producer.buffer
    if buffer.size > buffer.max_messages:
        return False
    conductor = app.topics
    lock = getattr(conductor, "_tp_to_callback_lock", None)
    index = getattr(conductor, "_tp_index", None)
    if lock is None or index is None or lock.locked():
        return False
    channels = index.get(tp)
    if not channels:
        return False
    return not any(channel.queue.full() for channel in channels)


async def drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
    """faust-streaming's ``Consumer._drain_messages`` with the direct delivery above.

    Runs as the Fetcher service's background task for the life of the consumer; its
    errors and cancellation are handled as in Faust.
    """
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    client_only = self.app.client_only
    # Topics whose records go straight to their agent's queue (streams.faustcompat.rawbatches).
    raw_routes = rawbatches.routes_of(self.app)
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            if self.flow_active and not client_only and not self._get_active_partitions():
                # Faust's getmany sleeps a whole second when no partition is active,
                # as happens between its resuming the flow and the partitions after a
                # rebalance: a takeover then waited that second.
                await sleep(IDLE_POLL_S)
                continue
            set_flag(CONSUMER_FETCHING)
            ait: AsyncIterator[tuple[TP, Any]] = getmany(timeout=1.0)
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        raw = raw_routes.get(tp.topic) if raw_routes else None
                        if raw is not None:
                            if not raw.accepts(self) and not await raw.room(self):
                                continue  # a rebalance: not read, as below
                            raw.put(self, tp, message)
                        elif delivers_at_once(self, tp):
                            await callback(message)
                        else:
                            delivery = callback(message)
                            raced = await self.wait_first(delivery, self.suspend_flow.wait())
                            if delivery not in raced.done:
                                # Abandoned (a rebalance): not read. The seek that
                                # follows decides where the partition resumes.
                                continue
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                for raw in raw_routes.values():
                    raw.delivered()
                unset_flag(CONSUMER_FETCHING)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)
