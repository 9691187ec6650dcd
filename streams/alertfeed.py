"""Read the alerts topic from chosen start positions, without a consumer group.

``fraudstream alerts`` (and anyone else who only looks at the alerts) must not disturb
the offsets of a consumer group that acts on them, so the feed assigns every partition
itself (``group_id=None``) and commits nothing. It yields the raw bytes with the Kafka
timestamp and position: decoding, filtering and printing are the caller's business.

Two modes: *until caught up* stops once every partition reached the end offset it had
when the feed opened (messages written later are not shown, so the command ends even
while workers keep alerting); *follow* keeps waiting. Both yield one ``CaughtUp`` marker
once the initial end offsets are reached, so that a caller that buffers the backlog (to
sort it across partitions, say) knows when to flush it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from streams.faustcompat import metadata
from streams.faustcompat import records as tolerant_records
from streams.kafka import (
    BrokerUnavailableError,
    bootstrap_failures,
    client_options,
    unavailable_error,
)
from streams.settings import Settings

#: Longest wait for one fetch in follow mode; a fetch returns as soon as a message arrives,
#: so this bounds nothing but idle polling.
_POLL_MS: Final = 1_000
#: Records per fetch: small enough to print the first alerts at once on a big backlog.
_MAX_RECORDS: Final = 500


class TopicMissingError(LookupError):
    """The topic to read does not exist (or has no partitions) on the broker."""


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where reading starts in every partition.

    Attributes:
        kind: ``beginning`` (the oldest message kept), ``end`` (only messages written
            from now on), ``last`` (the last ``value`` messages of each partition) or
            ``time`` (the first message whose timestamp is at or after ``value``, epoch
            milliseconds).
        value: The count of ``last`` or the time of ``time``; 0 otherwise.
    """

    kind: Literal["beginning", "end", "last", "time"]
    value: int = 0

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError(f"StartAt.value must not be negative, got {self.value}")

    @classmethod
    def beginning(cls) -> StartAt:
        """Start at the oldest message each partition still keeps."""
        return cls("beginning")

    @classmethod
    def end(cls) -> StartAt:
        """Start after the last message: only messages written from now on."""
        return cls("end")

    @classmethod
    def last(cls, count: int) -> StartAt:
        """Start ``count`` messages before the end of each partition."""
        return cls("last", count)

    @classmethod
    def time(cls, epoch_ms: int) -> StartAt:
        """Start at the first message stamped at or after ``epoch_ms``."""
        return cls("time", epoch_ms)


@dataclass(frozen=True, slots=True)
class FeedMessage:
    """One message of the topic, undecoded.

    Attributes:
        timestamp_ms: The Kafka timestamp (for alerts: when the worker sent it).
        value: The raw value, exactly as on the wire (None for a tombstone).
        partition: Its partition.
        offset: Its offset in the partition.
    """

    timestamp_ms: int
    value: bytes | None
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """Every partition reached the end offset it had when the feed opened.

    Attributes:
        messages: How many messages the feed yielded before this point.
    """

    messages: int


FeedItem = FeedMessage | CaughtUp


def start_offsets(
    start: StartAt,
    beginnings: Mapping[int, int],
    ends: Mapping[int, int],
    by_time: Mapping[int, int | None] | None = None,
) -> dict[int, int]:
    """Return the first offset to read in each partition.

    Args:
        start: Where to start.
        beginnings: The oldest kept offset of each partition.
        ends: The next offset to be written in each partition.
        by_time: For ``StartAt.time``: the first offset stamped at or after the time,
            None for a partition where no message is that recent (start at its end).

    Returns:
        Partition -> offset, always within ``[beginning, end]``.
    """
    offsets: dict[int, int] = {}
    for partition, end in ends.items():
        beginning = beginnings.get(partition, 0)
        match start.kind:
            case "beginning":
                offset = beginning
            case "end":
                offset = end
            case "last":
                offset = end - start.value
            case "time":
                found = (by_time or {}).get(partition)
                offset = end if found is None else found
        offsets[partition] = min(max(offset, beginning), end)
    return offsets


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Keep a chatty library logger below ERROR for a moment.

    The feed's own output is what a reader of `fraudstream alerts` or the demo wants.
    """
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class AlertFeed:
    """The messages of the alerts topic from a start position, as an async iterator.

    Use as ``async with AlertFeed(settings, StartAt.end(), follow=True) as feed:
    async for item in feed: ...``; leaving the block closes the consumer.
    """

    def __init__(
        self,
        settings: Settings,
        start: StartAt,
        *,
        follow: bool,
        topic: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """Prepare the feed; nothing connects before ``async with``.

        Args:
            settings: Connection options (through ``streams.kafka.client_options``).
            start: Where to start in every partition.
            follow: Keep waiting for new messages instead of stopping when caught up.
            topic: The topic to read; the alerts topic of the settings by default.
            timeout_s: Longest wait for the broker, the topic's metadata and offsets, so
                an unreachable broker or a leaderless partition fails instead of hanging.
        """
        self._settings = settings
        self._start = start
        self._follow = follow
        self.topic = topic or settings.topic_names["alerts"]
        self._timeout_s = timeout_s
        self._consumer: Any = None
        self._ends: dict[TopicPartition, int] = {}
        self._first: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> AlertFeed:
        """Connect, assign every partition of the topic and seek to the start.

        Raises:
            BrokerUnavailableError: No broker answered within the timeout.
            TopicMissingError: The topic does not exist.
            KafkaError: The broker refused a request (authorisation, say).
        """
        tolerant_records.install()  # an odd header name must not stop the feed
        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            # A start offset deleted by retention meanwhile: read what is left.
            auto_offset_reset="earliest",
            request_timeout_ms=int(self._timeout_s * 1000),
            **client_options(self._settings),
        )
        self._consumer = consumer
        try:
            await self._open(consumer)
        except BaseException:
            await consumer.stop()
            raise
        return self

    async def _open(self, consumer: Any) -> None:
        servers = self._settings.kafka_bootstrap_servers
        try:
            async with asyncio.timeout(self._timeout_s):
                with bootstrap_failures() as caught:
                    try:
                        await consumer.start()
                    except KafkaConnectionError as exc:
                        raise unavailable_error(self._settings, exc, caught.failures) from exc
                # All-topics metadata: asking for the topic by name could auto-create it on
                # a broker that allows that (streams.faustcompat.metadata).
                cluster = await metadata.all_topics_metadata(consumer)
        except (KafkaConnectionError, TimeoutError) as exc:
            reason = str(exc) or "timed out"
            raise BrokerUnavailableError(
                f"no Kafka broker answers at {servers} ({reason})"
            ) from exc
        partitions = cluster.partitions_for_topic(self.topic)
        if not partitions:
            raise TopicMissingError(f"topic {self.topic} does not exist at {servers}")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        with _quiet("aiokafka.consumer.subscription_state"):  # an INFO line per assign
            consumer.assign(tps)
        async with asyncio.timeout(self._timeout_s):
            beginnings = await consumer.beginning_offsets(tps)
            self._ends = await consumer.end_offsets(tps)
            by_time = None
            if self._start.kind == "time":
                found = await consumer.offsets_for_times({tp: self._start.value for tp in tps})
                by_time = {tp.partition: (o.offset if o else None) for tp, o in found.items()}
        offsets = start_offsets(
            self._start,
            {tp.partition: o for tp, o in beginnings.items()},
            {tp.partition: o for tp, o in self._ends.items()},
            by_time,
        )
        for tp in tps:
            consumer.seek(tp, offsets[tp.partition])
            self._first[tp] = offsets[tp.partition]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the consumer (it committed nothing, so there is nothing to flush)."""
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def backlog(self) -> int:
        """Messages between the start positions and the end offsets seen at opening."""
        return sum(end - self._first[tp] for tp, end in self._ends.items())

    def __aiter__(self) -> AsyncIterator[FeedItem]:
        return self.items()

    async def items(self) -> AsyncGenerator[FeedItem, None]:
        """Yield the messages, and one ``CaughtUp`` when the backlog is read.

        Without ``follow`` the iteration ends right after ``CaughtUp``. Close the
        generator (``contextlib.aclosing``) when leaving the loop early.
        """
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("use the feed inside `async with`")
        pending = {tp: end for tp, end in self._ends.items() if self._first[tp] < end}
        if not self._follow:
            # Nothing to fetch from a partition that is already caught up.
            done = [tp for tp in self._ends if tp not in pending]
            if done:
                consumer.pause(*done)
        yielded = 0
        caught_up = False
        while True:
            if not pending and not caught_up:
                caught_up = True
                yield CaughtUp(yielded)
                if not self._follow:
                    return
            batches = await consumer.getmany(timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
            for tp in sorted(batches, key=lambda t: t.partition):
                stop_at = self._ends[tp]
                for record in batches[tp]:
                    if not self._follow and record.offset >= stop_at:
                        break  # written after the feed opened
                    yielded += 1
                    yield FeedMessage(record.timestamp, record.value, tp.partition, record.offset)
            for tp in list(pending):
                # The position, not the last offset seen: it also moves over gaps
                # (compacted or transaction-marker offsets) that yield no record.
                if await consumer.position(tp) >= pending[tp]:
                    del pending[tp]
                    if not self._follow:
                        consumer.pause(tp)
