"""A service thread told to stop before it has started stops, instead of running forever.

Upstream: mode-streaming 0.7.1, ``mode/threads.py``, ``ServiceThread.stop``:

    async def stop(self) -> None:
        if self._started.is_set():
            await super().stop()
            if self._thread is not None:
                self._thread.stop()

``_started`` is set by the new thread itself, in ``Service._default_start`` run by
``ServiceThread._serve``, some time after ``ServiceThread.start`` launched it (its
``_thread_started``). A stop in between does nothing. The thread then starts its service
anyway and waits for a stop that was already missed; it is not a daemon, so the process
never exits. Faust's consumer runs in such a thread (``faust/transport/drivers/
aiokafka.py``, ``AIOKafkaConsumerThread``): a worker SIGTERMed while it was still
starting its consumer kept running, its event loop closed, until it was SIGKILLed. On a
busy machine the new thread may wait milliseconds for a core and the GIL, so a stop that
early is rare (the likely cause of a worker that ignored SIGTERM in one CI run; a thread
delayed by 3 s made it happen every time, as ``tests/unit/faustcompat/slowthread.py``
does for the tests).

`install` replaces ``ServiceThread.stop`` (once per process) with `stop`: in that window
it sets the service's stop flag from the thread's own loop, as ``Service.stop`` would, and
waits, with the event loop turning, until the thread has ended. The thread sees the flag
at its first check (``Service._actually_start`` looks at ``should_stop`` before
``on_start``), so it starts nothing and shuts its service down. Every other stop is
mode's own. ``tests/unit/faustcompat/test_threadstop_contract.py`` fails when the method
or the members it reads change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from mode.threads import ServiceThread

#: Marks the installed `stop`, so a second app does not wrap it again.
_INSTALLED: Final = "_fraudstream_thread_stop"

_mode_stop: Callable[[Any], Awaitable[None]] = ServiceThread.stop


def install() -> None:
    """Use `stop` as every mode service thread's stop (once per process)."""
    if getattr(ServiceThread.stop, _INSTALLED, False):
        return
    setattr(stop, _INSTALLED, True)
    ServiceThread.stop = stop  # type: ignore[method-assign]


def launched_not_started(service: Any) -> bool:
    """Whether ``service``'s thread was launched but has not yet started its service."""
    return bool(
        service._thread_started.is_set()
        and not service._started.is_set()
        and service._thread is not None
    )


async def stop(self: Any) -> None:
    """Stop as mode does, and also stop a thread launched but not yet started.

    Waits at most the service's ``shutdown_timeout`` for such a thread to end (mode's own
    stop waits that long for a started one's shutdown), then returns either way.
    """
    if not launched_not_started(self):
        await _mode_stop(self)
        return
    self._stopped_set()  # from the thread's loop, which runs it before the service starts
    # Joined from another thread: the thread hands its news to this loop as it ends.
    await asyncio.to_thread(self._thread.join, self.shutdown_timeout)
