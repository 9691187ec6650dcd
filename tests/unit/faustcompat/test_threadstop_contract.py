"""mode's ServiceThread.stop, which streams.faustcompat.threadstop replaces, and what it misses."""

from __future__ import annotations

import asyncio
import inspect

import mode.services
import mode.threads
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.threads import ServiceThread
from slowthread import LAUNCH_DELAY_S, Probe, launch, no_thread_left
from upstream import assert_unchanged, upstream_source

from streams.faustcompat import threadstop


def test_the_stop_and_start_threadstop_relies_on_are_modes_as_mirrored() -> None:
    assert_unchanged(
        mode.threads,
        "ServiceThread.stop",
        "8060a412ea46621137dd6c872d2cc2658caa17c354b981f6df8d4d81c84391f7",
        "streams.faustcompat.threadstop",
    )
    # _started is set by the thread itself, when it runs its service...
    assert "self._started.set()" in upstream_source(mode.services, "Service._default_start")
    assert "await self._default_start()" in upstream_source(mode.threads, "ServiceThread._serve")
    # ...after start() has marked the thread launched and launched it.
    start = upstream_source(mode.threads, "ServiceThread.start")
    assert start.index("self._thread_started.set()") < start.index("self._thread.start()")
    # The service's first look at its stop flag comes before on_start.
    actually = upstream_source(mode.services, "Service._actually_start")
    assert actually.index("should_stop") < actually.index("await self.on_start()")
    # The flag is set from the thread's own loop.
    assert "self.thread_loop.call_soon_threadsafe(self._stopped.set)" in upstream_source(
        mode.threads, "ServiceThread._stopped_set"
    )
    # Faust's consumer runs in such a thread, with mode's stop.
    assert issubclass(faust_aiokafka.AIOKafkaConsumerThread, ServiceThread)
    assert "stop" not in vars(faust_aiokafka.AIOKafkaConsumerThread)
    assert list(inspect.signature(threadstop._mode_stop).parameters) == ["self"]


async def test_modes_stop_misses_a_thread_not_yet_started_which_then_runs_on() -> None:
    """When this fails, mode stops such a thread itself: threadstop can go."""
    with no_thread_left():
        probe = Probe()
        start = await launch(probe)
        await threadstop._mode_stop(probe)  # launched, not started: does nothing
        await asyncio.sleep(LAUNCH_DELAY_S + 0.5)
        assert probe.started_service  # it started anyway...
        assert probe._thread is not None
        assert probe._thread.is_alive()  # ...and waits for the stop it missed
        await asyncio.wait_for(start, 5)
        await threadstop._mode_stop(probe)  # started now: mode's stop ends it
