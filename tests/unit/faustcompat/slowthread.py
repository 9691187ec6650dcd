"""A mode service thread that gets a core late, as on a busy machine (threadstop's tests)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

from mode.threads import ServiceThread, WorkerThread

#: How long the thread waits before it runs its service.
LAUNCH_DELAY_S = 0.5


class SlowWorker(WorkerThread):
    """Runs the service LAUNCH_DELAY_S after being started."""

    def run(self) -> None:
        time.sleep(LAUNCH_DELAY_S)
        super().run()


class Probe(ServiceThread):
    """A service thread that records whether it ever started its service."""

    Worker = SlowWorker
    started_service = False

    async def on_start(self) -> None:
        self.started_service = True


async def launch(service: ServiceThread) -> asyncio.Task[None]:
    """Start ``service`` as its parent would; return once its thread is launched, not started."""
    start = asyncio.ensure_future(service.start())
    await asyncio.sleep(0)  # start() runs up to its wait for the thread
    assert service._thread is not None
    assert not service._started.is_set()
    return start


@contextlib.contextmanager
def no_thread_left() -> Iterator[None]:
    """Fail when a service thread started inside the block is still running 5 s after it."""
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        if not isinstance(thread, WorkerThread):
            continue  # asyncio's executor, say
        thread.join(5)
        assert not thread.is_alive(), f"{thread.name} outlived its test"
