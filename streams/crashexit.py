"""A crashed worker that does not finish stopping is ended, so its supervisor restarts it.

When one of the worker's services crashes (Redis refusing the password mid-stream, say),
mode crashes the whole worker and stops its services. That stop can hang: a run of the
Redis refusal test (tests/integration/pipeline/test_pipeline_redis_refusal.py) left the
worker alive for minutes with its Kafka consumer thread gone and its event loop still
turning, neither scoring nor exiting; only a liveness probe would ever have ended it,
and outside Kubernetes nothing would.

`exit_when_stuck` watches from a daemon thread: once the worker has crashed, it has
`CRASH_EXIT_AFTER_S` to exit by itself; after that the process ends with exit code 1
and a CRITICAL line saying so. Ending it hard loses nothing: what was not flushed to
Redis is processed again after the restart, as after a SIGKILL.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

logger = logging.getLogger(__name__)

#: Seconds a crashed worker has to exit by itself.
CRASH_EXIT_AFTER_S: Final = 30.0
#: Seconds between two looks at the worker.
POLL_S: Final = 0.5


class Crashable(Protocol):
    """What the watch reads of the worker: mode's ``Service.crashed``."""

    @property
    def crashed(self) -> bool:
        """Whether the service crashed (its stop follows)."""
        ...


def exit_when_stuck(
    worker: Crashable,
    *,
    after_s: float = CRASH_EXIT_AFTER_S,
    poll_s: float = POLL_S,
    exit_process: Callable[[int], object] = os._exit,
) -> threading.Thread:
    """Start the daemon thread that ends the process `after_s` after ``worker`` crashed."""

    def watch() -> None:
        while not worker.crashed:
            time.sleep(poll_s)
        time.sleep(after_s)
        logger.critical(
            "the worker crashed and had not stopped %.0f s later: exiting (code 1); "
            "a restart resumes from the last flush",
            after_s,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        exit_process(1)

    thread = threading.Thread(target=watch, name="crash-exit", daemon=True)
    thread.start()
    return thread
