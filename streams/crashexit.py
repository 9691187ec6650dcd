"""A worker that does not finish stopping is ended, so its supervisor restarts it.

When one of the worker's services crashes (Redis refusing the password mid-stream, say),
mode crashes the whole worker and stops its services. That stop can hang: a run of the
Redis refusal test (tests/integration/pipeline/test_pipeline_redis_refusal.py) left the
worker alive for minutes with its Kafka consumer thread gone and its event loop still
turning, neither scoring nor exiting; only a liveness probe would ever have ended it,
and outside Kubernetes nothing would.

A stop asked for (SIGTERM, Ctrl-C) can hang too: a worker stopped while Faust was still
starting its consumer thread kept that thread running after its event loop had closed,
and the interpreter waited for it forever (streams.faustcompat.threadstop fixes that
one). An orchestrator ends such a worker with SIGKILL at its grace period, and nobody
learns why.

`exit_when_stuck` watches from a daemon thread: once the worker has crashed, it has
`CRASH_EXIT_AFTER_S` to exit by itself; once it has been asked to stop,
`STOP_EXIT_AFTER_S`, under the 60 s grace of deploy/. After that the process ends with
exit code 1 and a CRITICAL line saying so, which names every thread still running and
where it is: the next hang is diagnosed from the log. Ending it hard loses nothing: what
was not flushed to Redis is processed again after the restart, as after a SIGKILL.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Final, Protocol

logger = logging.getLogger(__name__)

#: Seconds a crashed worker has to exit by itself.
CRASH_EXIT_AFTER_S: Final = 30.0
#: Seconds a worker asked to stop has to exit by itself (a graceful stop takes seconds).
STOP_EXIT_AFTER_S: Final = 50.0
#: Seconds between two looks at the worker.
POLL_S: Final = 0.5


class Stoppable(Protocol):
    """What the watch reads of the worker: mode's ``Service.crashed`` and ``should_stop``."""

    @property
    def crashed(self) -> bool:
        """Whether the service crashed (its stop follows)."""
        ...

    @property
    def should_stop(self) -> bool:
        """Whether the service was asked to stop, or is stopping."""
        ...


def thread_stacks() -> str:
    """Every live thread of the process, by name, with the stack it is at."""
    frames = sys._current_frames()  # noqa: SLF001 - documented in sys, for exactly this
    parts = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident) if thread.ident is not None else None
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (no frame)\n"
        kind = "daemon" if thread.daemon else "non-daemon"
        parts.append(f"thread {thread.name!r} ({kind}):\n{stack}")
    return "".join(parts)


def exit_when_stuck(
    worker: Stoppable,
    *,
    after_s: float = CRASH_EXIT_AFTER_S,
    stop_after_s: float = STOP_EXIT_AFTER_S,
    poll_s: float = POLL_S,
    exit_process: Callable[[int], object] = os._exit,
) -> threading.Thread:
    """Start the daemon thread that ends the process when the worker does not stop.

    The process ends `after_s` after ``worker`` crashed, or `stop_after_s` after it was
    asked to stop, whichever comes first.
    """

    def watch() -> None:
        crashed_at = stopping_at = None
        while True:
            now = time.monotonic()
            if crashed_at is None and worker.crashed:
                crashed_at = now
            if stopping_at is None and worker.should_stop:
                stopping_at = now
            if crashed_at is not None and now - crashed_at >= after_s:
                reason = f"the worker crashed and had not stopped {after_s:.0f} s later"
                break
            if stopping_at is not None and now - stopping_at >= stop_after_s:
                reason = (
                    f"the worker was asked to stop and had not exited {stop_after_s:.0f} s later"
                )
                break
            time.sleep(poll_s)
        logger.critical(
            "%s: exiting (code 1); a restart resumes from the last flush. Threads:\n%s",
            reason,
            thread_stacks(),
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        exit_process(1)

    thread = threading.Thread(target=watch, name="crash-exit", daemon=True)
    thread.start()
    return thread
