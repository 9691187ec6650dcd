"""Outputs Kafka refused for good: the worker stops before their events count as applied.

An agent's send only queues a message: aiokafka delivers it later and settles the
future it returned. A transient error (a leader moving, a broker down) is retried until
the broker takes the batch. An error no retry cures (the topic's ``max.message.bytes``
below the record, a write the broker's ACLs refuse, a topic that is gone) fails the
batch's future, and nothing else happens: before this module nobody read that future,
the Redis flush that followed wrote the offsets of the events whose outputs were lost,
and a restart never sent them again (asyncio's "Future exception was never retrieved"
was the only trace).

:class:`DeliveryWatch` keeps every output's future and reads it once settled. The
first refusal makes it fail for good: every later Redis flush writes nothing
(``streams.tablestore.store`` asks :meth:`DeliveryWatch.failure` after the producer's
flush and before writing), the refusal is logged with its topic, partition and error
and counted in ``fraudstream_outputs_undelivered_total{topic}``, and the worker is
stopped as SIGTERM stops it, then exits with `EXIT_UNDELIVERED`. Its supervisor restarts it; the new
worker resumes from the last flush in Redis, so every event whose output was refused is
processed and sent again (outputs at least once, as after a crash), and the restarts go
on, visibly, until the operator fixes what Kafka refuses.

Failing for good, rather than carrying on past one refusal, is also what the idempotent
producer needs (``streams.faustcompat.idempotence``): a refused batch has used its
sequence numbers, so the broker refuses every later batch of that partition as out of
order until a new producer starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

logger = logging.getLogger(__name__)

#: The worker's exit code after an output was refused (sysexits' EX_UNAVAILABLE).
EXIT_UNDELIVERED: Final = 69
#: Seconds between the worker's own reads of the outputs' futures (besides the flushes').
CHECK_EVERY_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """The first output Kafka refused.

    Attributes:
        topic: The output's topic.
        partition: Its partition, when the producer had chosen one.
        error: What the producer's future failed with.
    """

    topic: str
    partition: int | None
    error: BaseException

    def __str__(self) -> str:
        where = self.topic if self.partition is None else f"{self.topic}[{self.partition}]"
        return f"Kafka refused an output to {where}: {type(self.error).__name__}: {self.error}"


class DeliveryWatch:
    """Keeps the delivery future of every output; finds the first refusal among them.

    The futures are read when asked (`failure`: by each Redis flush, after the
    producer's flush, and by the worker's timer every `CHECK_EVERY_S`), not by a
    callback on each: a done-callback costs about 6 us per output on this path, a score
    record per transaction included; keeping and later reading a future costs a tenth.

    Args:
        on_refusal: Called once, with the first refusal (the worker's stop).
        count: Called with the topic of every refused output (a metric).
    """

    def __init__(
        self,
        on_refusal: Callable[[Refusal], None],
        count: Callable[[str], None] = lambda topic: None,
    ) -> None:
        self._on_refusal = on_refusal
        self._count = count
        self._refusal: Refusal | None = None
        self._logged: set[tuple[str, type[BaseException]]] = set()
        #: Outputs sent and not read yet: (topic, partition, future).
        self._pending: list[tuple[str, int | None, asyncio.Future[Any]]] = []

    def watch(self, topic: str, partition: int | None, future: Any) -> None:
        """Follow an output's delivery (``future``: what the producer's send returned)."""
        if isinstance(future, asyncio.Future):
            self._pending.append((topic, partition, future))

    def failure(self) -> Refusal | None:
        """The first refusal, or None while every output settled so far was delivered.

        Reads the futures settled since the last call (which also keeps asyncio from
        logging a refused one as "never retrieved"); those still in flight stay kept.
        """
        pending = self._pending
        if pending:
            self._pending = []
            for item in pending:
                future = item[2]
                if not future.done():
                    self._pending.append(item)
                elif future.cancelled():
                    self._refused(item[0], item[1], asyncio.CancelledError("delivery cancelled"))
                elif (error := future.exception()) is not None:
                    self._refused(item[0], item[1], error)
        return self._refusal

    @property
    def in_flight(self) -> int:
        """Outputs kept since the last `failure` that had not settled then."""
        return len(self._pending)

    def _refused(self, topic: str, partition: int | None, error: BaseException) -> None:
        self._count(topic)
        refusal = Refusal(topic, partition, error)
        kind = (topic, type(error))
        if kind not in self._logged:  # one line per topic and error, not one per record
            self._logged.add(kind)
            logger.error(
                "could not deliver an output: %s; nothing more is written to Redis, so a "
                "restart sends it again: the worker stops (fix the topic, then let it restart)",
                refusal,
            )
        if self._refusal is None:
            self._refusal = refusal
            self._on_refusal(refusal)
