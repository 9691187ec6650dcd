"""Checks every agent makes of an input record before it may change any state.

Two rules that no field check can make, because they compare the record with the world:

- **Its partition.** Every keyed topic is partitioned by Kafka's default partitioner,
  murmur2 of the key bytes modulo the partition count, as the Java client, Faust and
  aiokafka do; one worker then holds every event of a card (or a terminal). A producer
  with another partitioner (librdkafka's default is CRC32: kcat, confluent-kafka-python,
  Go's confluent client) puts a key on another partition, where its state would be split
  from the rest of the card's. The record is *re-routed*: sent unchanged (key, value,
  headers) to its key's partition of the same topic with a `REROUTED_FROM_HEADER`, and
  processed there like any other, so nothing is lost and the card keeps one state. A
  re-routed copy that is again on a wrong partition (the topic's partition count differs
  from the settings) is dead-lettered ``wrong_partition`` instead of going round.
- **Its time.** An event timed more than the allowed skew ahead of the worker's clock
  (``FRAUDSTREAM_MAX_EVENT_TIME_AHEAD_S``) is dead-lettered ``future_event`` and changes
  nothing. No payment happens in the future; one that claims to would move its card's
  and terminal's clocks ahead of every real event, which would then be refused as late.
  The broker's timestamp cannot bound it: on the event topics it is the producer's
  CreateTime, the historical event time itself for a replay.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from streams.contracts import DecodeError, Problem
from streams.metrics import PipelineMetrics
from streams.pipeline.inputs import InputRecord
from streams.pipeline.outputs import Send, original_headers
from streams.pipeline.terminals import KeyPartitioner

#: Header on a re-routed record: ``topic/partition/offset`` where the producer put it.
REROUTED_FROM_HEADER: Final = "fraudstream-rerouted-from"

E = TypeVar("E")


@dataclass(frozen=True)
class EventKind(Generic[E]):
    """What `Intake.admit` needs to know of one input topic's events.

    Attributes:
        decode: The topic's validating decoder (``streams.contracts``).
        key: The id the message key must be (the entity whose state the event changes).
        wrong_key: The dead-letter problem of a message whose key is not ``key``.
        time_ms: The event's time that may not be ahead of the clock.
        time_field: That time's field name, for the dead letter.
    """

    decode: Callable[[bytes | None], E | DecodeError]
    key: Callable[[E], str]
    wrong_key: Callable[[bytes | None], DecodeError]
    time_ms: Callable[[E], int]
    time_field: str


class Intake:
    """The partition and time checks of one agent's input topic.

    Args:
        partitions: Partition count of the keyed topics (None: the partition is not
            checked, for stores and tests that place keys themselves).
        max_ahead_ms: How far ahead of the wall clock an event time may be.
        send: Queues a message on the producer.
        metrics: The worker's metrics.
        clock: Wall-clock seconds (``time.time``; tests set it).
    """

    def __init__(
        self,
        *,
        partitions: int | None,
        max_ahead_ms: int,
        send: Send,
        metrics: PipelineMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.partition_of = None if partitions is None else KeyPartitioner(partitions)
        self.max_ahead_ms = max_ahead_ms
        self.send = send
        self.metrics = metrics
        self.clock = clock

    async def admit(
        self, events: Sequence[InputRecord], kind: EventKind[E], max_bytes: int
    ) -> tuple[list[tuple[InputRecord, E]], list[tuple[InputRecord, DecodeError]]]:
        """Decode and check a micro-batch: the events that may change state, and the rest.

        In this order, each record stopping at the first check it fails: its size (over
        ``max_bytes`` it is not read), its contract, its key (``kind.key``), its
        partition (a misplaced record is re-routed, or dead-lettered if it was already),
        its time (not past `horizon_ms`). Rejected records come with the problem their
        dead letter names.
        """
        admitted: list[tuple[InputRecord, E]] = []
        rejected: list[tuple[InputRecord, DecodeError]] = []
        horizon = self.horizon_ms()
        decode, key_of, time_of = kind.decode, kind.key, kind.time_ms
        for event in events:
            raw = event.value
            if raw is not None and len(raw) > max_bytes:
                rejected.append((event, too_large(len(raw), max_bytes)))
                continue
            decoded = decode(raw)
            if isinstance(decoded, DecodeError):
                rejected.append((event, decoded))
            elif event.key != key_of(decoded).encode():
                rejected.append((event, kind.wrong_key(event.key)))
            elif (home := self.misplaced(event)) is not None:
                problem = await self.reroute(event, home)
                if problem is not None:
                    rejected.append((event, problem))
            elif (at := time_of(decoded)) > horizon:
                rejected.append((event, future_event(at, horizon, kind.time_field)))
            else:
                admitted.append((event, decoded))
        return admitted, rejected

    def horizon_ms(self) -> int:
        """The latest event time accepted now (read once per micro-batch)."""
        return int(self.clock() * 1000) + self.max_ahead_ms

    def misplaced(self, event: InputRecord) -> int | None:
        """The partition the event's key belongs to, when it is not the event's own."""
        key = event.key
        if self.partition_of is None or key is None:
            return None
        partition = self.partition_of(key)
        return None if partition == event.message.partition else partition

    async def reroute(self, event: InputRecord, partition: int) -> DecodeError | None:
        """Send a misplaced record to ``partition``; or say why it goes to the dead letters.

        Returns:
            None when it was re-routed; a ``wrong_partition`` problem for a record that
            was re-routed once already (it would go round).
        """
        message = event.message
        headers = message.headers
        if any(name == REROUTED_FROM_HEADER for name, _ in _items(headers)):
            return DecodeError(
                Problem.WRONG_PARTITION,
                f"re-routed once and still not on partition {partition} of its key: the "
                "topic's partition count differs from FRAUDSTREAM_TOPIC_PARTITIONS",
            )
        sent_headers = original_headers(headers)
        origin = f"{message.topic}/{message.partition}/{message.offset}"
        sent_headers.append((REROUTED_FROM_HEADER, origin.encode()))
        await self.send(message.topic, event.key, event.value, partition, sent_headers)
        self.metrics.rerouted.labels(topic=message.topic).inc()
        return None


def too_large(size: int, limit: int) -> DecodeError:
    """The dead-letter problem of a record over the size limit (not read at all)."""
    return DecodeError(Problem.TOO_LARGE, f"message of {size} bytes exceeds the {limit}-byte limit")


def future_event(time_ms: int, horizon_ms: int, field: str) -> DecodeError:
    """The dead-letter problem of an event timed after ``horizon_ms``."""
    return DecodeError(
        Problem.FUTURE_EVENT,
        f"{field} {time_ms} is {time_ms - horizon_ms} ms past the latest time accepted now "
        "(the worker's clock plus FRAUDSTREAM_MAX_EVENT_TIME_AHEAD_S): a producer's clock "
        "or a unit is wrong",
        field,
    )


def _items(headers: Any) -> Any:
    if not headers:
        return ()
    return headers.items() if hasattr(headers, "items") else headers
