"""streams.faustcompat.threadstop: a service thread stopped before it starts ends."""

from __future__ import annotations

import asyncio

from mode.threads import ServiceThread
from slowthread import LAUNCH_DELAY_S, Probe, launch, no_thread_left

from streams.faustcompat import threadstop


async def test_a_thread_stopped_before_it_starts_ends_without_starting_its_service() -> None:
    with no_thread_left():
        probe = Probe()
        start = await launch(probe)
        await asyncio.wait_for(threadstop.stop(probe), LAUNCH_DELAY_S + 5)
        assert probe._thread is not None
        assert not probe._thread.is_alive()
        assert not probe.started_service
        await asyncio.wait_for(start, 5)  # its parent's start returns


async def test_a_started_thread_is_stopped_by_modes_own_stop() -> None:
    with no_thread_left():
        probe = Probe()
        start = await launch(probe)
        await asyncio.wait_for(start, LAUNCH_DELAY_S + 5)
        assert probe.started_service
        await asyncio.wait_for(threadstop.stop(probe), 5)
        assert probe._thread is not None
        assert not probe._thread.is_alive()


async def test_a_thread_never_launched_is_left_alone() -> None:
    probe = Probe()
    await asyncio.wait_for(threadstop.stop(probe), 1)
    assert probe._thread is None
    probe.thread_loop.close()


def test_install_replaces_modes_stop_once() -> None:
    threadstop.install()
    threadstop.install()
    assert ServiceThread.stop is threadstop.stop
