"""aiokafka's connection errors during a broker outage: two warnings and a counter.

aiokafka logs every failed attempt to reach a broker, and every client retries about ten
times a second (``retry_backoff_ms``) for metadata, fetches, heartbeats and produce
requests: a worker wrote some 115 ERROR lines a second while its broker was down, which
buries anything else in the log and says nothing new after the first line. Here the
first failure of an outage is logged once, as a WARNING; the failures after it are only
counted (``fraudstream_kafka_connection_errors_total``); and once no failure has come for
``QUIET_S`` seconds (the clients retry far more often than that, so silence means they
got through), one more WARNING says the errors stopped, how many there were and how long
the outage lasted.

The messages are recognised by their format strings, which the pinned aiokafka (0.14)
logs verbatim; ``tests/unit/streams/test_kafkalog.py`` checks that each still appears in
the installed aiokafka's source, so an upgrade that rewords one fails a test instead of
letting its lines through unnoticed.

The bootstrap lines of a client's start (``Unable connect to "host:port"``) are left to
``streams.kafka.bootstrap_failures``, which turns them into the one-line error of a CLI
that cannot start; during an outage they are counted, nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError
from prometheus_client import Counter

logger = logging.getLogger(__name__)

#: Seconds without a connection error after which an outage counts as over.
QUIET_S: Final = 5.0

#: Failed attempts to reach a broker, every aiokafka client of the process together.
#: Process-wide (no registry of its own): ``streams.metrics`` adds it to each registry.
CONNECTION_ERRORS: Final = Counter(
    "fraudstream_kafka_connection_errors",
    "Failed attempts of this process's Kafka clients to reach a broker (connect, metadata, "
    "fetch, heartbeat, produce); logged once per outage, counted here.",
    registry=None,
)

#: The aiokafka 0.14 messages, by logger, that report a failed attempt to reach a broker.
CONNECTION_ERROR_MESSAGES: Final[Mapping[str, frozenset[str]]] = {
    "aiokafka": frozenset(
        {
            "Unable connect to node with id %s: %s",
            "Unable to update metadata from %s",
            "Unable to request metadata from node with id %s: %r",
        }
    ),
    "aiokafka.producer.sender": frozenset(
        {"Got error produce response: %s", "Cannot send %r to %s: %r"}
    ),
    "aiokafka.consumer.fetcher": frozenset(
        {"Failed fetch messages from %s: %s", "Failed fetch offsets from %s: %s"}
    ),
    "aiokafka.consumer.group_coordinator": frozenset(
        {"Heartbeat send request failed: %s. Will retry.", "Group Coordinator Request failed: %s"}
    ),
}

#: A client's bootstrap failures (logger ``aiokafka``): counted during an outage only.
BOOTSTRAP_MESSAGES: Final = frozenset(
    {'Unable connect to "%s:%s": %s', 'Unable to request metadata from "%s:%s": %s'}
)


#: Errors that mean "could not reach the broker" (a broker's answer, such as
#: NotLeaderForPartition while a topic is created, is not an outage).
UNREACHABLE: Final = (
    KafkaConnectionError,
    NodeNotReadyError,
    RequestTimedOutError,
    OSError,
    TimeoutError,
)


def is_unreachable(record: logging.LogRecord) -> bool:
    """Whether a connection-error line's exception (or its cause) is a failure to reach.

    A line without an exception argument ("Unable to update metadata from [1]") is one.
    """
    args = record.args if isinstance(record.args, tuple) else ()
    errors = [arg for arg in args if isinstance(arg, BaseException)]
    return not errors or any(
        isinstance(error, UNREACHABLE) or isinstance(error.__cause__, UNREACHABLE)
        for error in errors
    )


class OutageLog(logging.Filter):
    """Turns a stream of connection errors into a start warning, a counter and an end warning.

    One instance serves every aiokafka logger (an outage is the process's, whichever
    client sees it). The end is found by a timer on the event loop that logged the
    errors (aiokafka logs from its tasks); without a running loop it is reported at the
    next connection error that comes after a quiet period.

    Args:
        quiet_s: Seconds without an error that end an outage.
        clock: Monotonic seconds (a parameter for tests).
        counter: Where errors are counted.
    """

    def __init__(
        self,
        quiet_s: float = QUIET_S,
        clock: Callable[[], float] = time.monotonic,
        counter: Counter = CONNECTION_ERRORS,
    ) -> None:
        super().__init__()
        self.quiet_s = quiet_s
        self._clock = clock
        self._counter = counter
        self._lock = threading.Lock()
        self._since: float | None = None  # start of the current outage
        self._last = 0.0  # time of its latest error
        self._errors = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    @property
    def in_outage(self) -> bool:
        """Whether Kafka is unreachable now: an error came within the last ``quiet_s``.

        Read by clock, not by the end warning's timer: the loop that scheduled it may
        have gone (a client's loop closed), leaving the warning for the next error.
        """
        return self.down_since is not None

    @property
    def down_since(self) -> float | None:
        """When the current outage began (the clock's seconds), or None: plain reads."""
        since = self._since
        if since is None or self._clock() - self._last >= self.quiet_s:
            return None
        return since

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the first error of an outage through as a WARNING; count and drop the rest."""
        message = record.msg
        if not isinstance(message, str):
            return True
        if message in BOOTSTRAP_MESSAGES and record.name == "aiokafka":
            with self._lock:
                if self._since is not None:
                    self._note_error()
            return True  # bootstrap_failures (or the log) decides
        if message not in CONNECTION_ERROR_MESSAGES.get(record.name, ()):
            return True
        if not is_unreachable(record):
            return True
        with self._lock:
            now = self._clock()
            if self._since is not None and now - self._last >= self.quiet_s:
                self._end(now)  # quiet for long enough, and no timer said so
            if self._since is not None:
                self._note_error()
                if not self._timer_alive():  # its loop has gone: watch from this one
                    self._schedule(self.quiet_s)
                return False
            self._since = self._last = now
            self._errors = 1
            self._counter.inc()
            self._schedule(self.quiet_s)
        original = record.getMessage()
        record.levelno = logging.WARNING
        record.levelname = logging.getLevelName(logging.WARNING)
        record.msg = (
            "Kafka unreachable (%s); further connection errors are counted in "
            "fraudstream_kafka_connection_errors_total, not logged, until none comes for %.0f s"
        )
        record.args = (original, self.quiet_s)
        return True

    def _note_error(self) -> None:
        self._errors += 1
        self._last = self._clock()
        self._counter.inc()

    def _timer_alive(self) -> bool:
        loop = self._timer_loop
        return self._timer is not None and loop is not None and not loop.is_closed()

    def _schedule(self, delay_s: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._timer, self._timer_loop = None, None
            return
        self._timer = loop.call_later(delay_s, self._check)
        self._timer_loop = loop

    def _check(self) -> None:
        with self._lock:
            if self._since is None:
                return
            quiet = self._clock() - self._last
            if quiet >= self.quiet_s:
                self._end(self._clock())
            else:
                self._schedule(self.quiet_s - quiet)

    def _end(self, now: float) -> None:
        assert self._since is not None
        logger.warning(
            "Kafka connection errors stopped: %d in %.1f s, none for the last %.0f s",
            self._errors,
            self._last - self._since,
            now - self._last,
        )
        if self._timer is not None:
            self._timer.cancel()
        self._since, self._timer, self._timer_loop, self._errors = None, None, None, 0


#: The process's one filter (its state is the process's view of the outage).
OUTAGE_LOG: Final = OutageLog()


def install_outage_log() -> None:
    """Put ``OUTAGE_LOG`` on every aiokafka logger that reports connection errors, once.

    A filter on a logger sees only that logger's own records (not its children's), so it
    goes on each of them.
    """
    for name in CONNECTION_ERROR_MESSAGES:
        log = logging.getLogger(name)
        if OUTAGE_LOG not in log.filters:
            log.addFilter(OUTAGE_LOG)
