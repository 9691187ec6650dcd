"""The replay's Kafka edge: topic checks, an idempotent producer, batches, pacing.

Events go out in the order ``streams.replay.events`` gives them. The producer is
idempotent (``enable_idempotence``: acks from all in-sync replicas, sequence numbers, at
most one batch in flight per partition in aiokafka), so every partition receives its
events exactly once and in that order, retries included.

Keys and partitions: a transaction is keyed by ``customer_id`` (the score agent's
partitioning), a fraud report by ``terminal_id`` (the terminal agent's; DESIGN "Data
flow"). Partitions are chosen as Kafka's default partitioner does (murmur2 of the key,
as the Java client and Faust do), so any other producer of the same keys agrees.

Batching: records are appended straight into aiokafka batch builders, one open builder
per topic-partition, each sent when full, when older than ``LINGER_S``, before the
sender sleeps for the pace, and at the end. At a pace the sender sleeps at least
``PACE_TICK_S`` (5 ms, the Java client's default ``linger.ms``) and then sends what
fell due meanwhile together. Waking for every event made a produce request per one or
two events at a few thousand a second; the requests cost the broker and this process
most of their CPU (measured at 2,900 and 3,600 events/s: the broker 50 % of a core
before, 24 % after; the replay 42 % before, 15 % after). That skips ``AIOKafkaProducer.send``'s
per-record coroutine and future (the per-event cost that matters at 50,000 events/s);
aiokafka still assigns the idempotent sequence numbers when it drains a batch. It also
holds at most one queued batch per partition, which bounds the replay's memory.

Every record carries ``streams.kafka.SENT_AT_HEADER``: the wall-clock time (epoch ms) at
which the replay handed it to the producer, read once per slice of at most
``SLICE_EVENTS`` events. An alert's latency measured from it therefore includes the
producer's batching (at most ``LINGER_S`` at a pace, a batch's fill time at ``max``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    InvalidTimestampError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
)
from aiokafka.partitioner import murmur2

from features.dataset import iso_ms
from streams.kafka import (
    SENT_AT_HEADER,
    BrokerUnavailableError,
    bootstrap_failures,
    broker_answers,
    client_options,
    describe_topic_configs,
    ensure_topics,
    product_topics,
)
from streams.replay.events import REPORT, TRANSACTION, StreamStats, count
from streams.replay.fence import ProduceFence, ProduceFencedError
from streams.replay.pacing import Pacer
from streams.replay.resume import (
    NOTHING,
    REPLAY_SEQ_HEADER,
    ResumeError,
    Tail,
    Target,
    Written,
    to_send,
    written,
)
from streams.replay.tails import read_tails
from streams.settings import Settings

#: Most bytes in one record batch (the broker's message.max.bytes defaults to 1 MiB).
BATCH_BYTES: Final = 512 * 1024
#: An open batch is sent once it is this old, so a quiet partition is not held back.
LINGER_S: Final = 0.05
#: Events appended per pacing decision, clock read and progress report.
SLICE_EVENTS: Final = 1024
#: Shortest sleep between sends at a pace: the events due meanwhile go out together.
PACE_TICK_S: Final = 0.005
#: A topic must keep replayed events at least this long after they are sent.
MIN_KEEP_MS: Final = 24 * 3600 * 1000
#: Memoised key hashes; beyond this many distinct keys the memo starts over.
_MAX_MEMO_KEYS: Final = 1_000_000
#: How long a replay waits for an unreachable broker by default (``--outage-timeout``).
OUTAGE_TIMEOUT_S: Final = 600.0  # keep equal to the CLI default
#: Longest wait for a dropped producer to fail what it holds.
STOP_TIMEOUT_S: Final = 35.0
#: The end of every failure message of a replay that handed events to Kafka.
RESUME_HINT: Final = (
    "run the same command with --resume to continue exactly after what the topics hold"
)

logger = logging.getLogger(__name__)


class ReplayError(RuntimeError):
    """Kafka refused the replay or failed during it; the message is one line."""


class SourceFailedError(RuntimeError):
    """The events' source failed during the replay, after what was sent was delivered.

    Attributes:
        cause: The source's exception.
        result: What was sent (and delivered) before it failed.
    """

    def __init__(self, cause: Exception, result: ReplayResult) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.result = result


@dataclass(frozen=True, slots=True)
class SentEvent:
    """The last event handed to Kafka, to say how far a replay got.

    Attributes:
        kind: ``events.TRANSACTION`` or ``events.REPORT``.
        tx_id: The transaction (the reported one, for a report).
        time_ms: Its event time.
    """

    kind: int
    tx_id: str
    time_ms: int

    def describe(self) -> str:
        """E.g. ``transaction 0001234 at 2018-04-03T10:00:00.000Z``."""
        what = "transaction" if self.kind == TRANSACTION else "fraud report of"
        return f"{what} {self.tx_id} at {iso_ms(self.time_ms)}"


@dataclass(slots=True)
class ReplayResult:
    """What a replay sent.

    Attributes:
        stats: Events sent, by kind, and their event-time span.
        last: The last event sent, if any.
        elapsed_s: Wall-clock seconds from the producer's start to the last acknowledgement.
        interrupted: Whether it stopped early on request (Ctrl-C); everything counted
            in ``stats`` was still delivered.
        resumed: Whether it continued what the topics held (``--resume``).
        skipped: Events not sent because their partition held them already.
        outages: Broker outages ridden out.
    """

    stats: StreamStats = field(default_factory=StreamStats)
    last: SentEvent | None = None
    elapsed_s: float = 0.0
    interrupted: bool = False
    resumed: bool = False
    skipped: int = 0
    outages: int = 0


#: Called after every slice with the counts so far and the last event time.
ProgressCallback = Callable[[StreamStats, int], None]


def kafka_partition(key_hash: int, partitions: int) -> int:
    """Kafka's default partition of a key hash (``murmur2(key) & 0x7fffffff``)."""
    return key_hash % partitions


class KeyHashes:
    """murmur2 key hashes as Kafka's default partitioner computes them, memoised.

    aiokafka's murmur2 is pure Python (about 2 us per short key); a dataset has far fewer
    customers and terminals than events, so each is hashed once.
    """

    def __init__(self) -> None:
        self._memo: dict[bytes, int] = {}

    def __call__(self, keys: Sequence[bytes]) -> list[int]:
        """The positive murmur2 hash of each key."""
        memo = self._memo
        if len(memo) > _MAX_MEMO_KEYS:
            memo.clear()
        hashes = []
        for key in keys:
            hashed = memo.get(key)
            if hashed is None:
                hashed = memo[key] = murmur2(key) & 0x7FFFFFFF
            hashes.append(hashed)
        return hashes


def topic_config_problem(
    topic: str, config: dict[str, str], oldest_ms: int, now_ms: int
) -> str | None:
    """Why a topic would refuse or soon delete events as old as ``oldest_ms``, or None.

    Args:
        topic: The topic's name, for the message.
        config: Its effective configs (``retention.ms``, ``message.timestamp.type``,
            ``message.timestamp.before.max.ms``; missing ones are not checked).
        oldest_ms: Event time of the oldest event to send.
        now_ms: The wall clock, epoch ms.
    """
    if config.get("message.timestamp.type", "CreateTime") != "CreateTime":
        return (
            f"topic {topic} overwrites event timestamps with the append time "
            "(message.timestamp.type=LogAppendTime); set it to CreateTime"
        )
    age_ms = now_ms - oldest_ms
    before_max = int(config.get("message.timestamp.before.max.ms", "-1"))
    if 0 <= before_max < age_ms:
        return (
            f"topic {topic} refuses events older than {before_max} ms "
            f"(message.timestamp.before.max.ms) and the replay starts at {iso_ms(oldest_ms)}"
        )
    retention = int(config.get("retention.ms", "-1"))
    if 0 <= retention < age_ms + MIN_KEEP_MS:
        return (
            f"topic {topic} deletes events older than {retention} ms (retention.ms) and the "
            f"replay starts at {iso_ms(oldest_ms)}: the broker would delete them; set "
            "retention.ms=-1 on it (fraudstream declares its topics so) or replay later dates"
        )
    return None


async def prepare_topics(settings: Settings, oldest_ms: int) -> tuple[str, str]:
    """Declare the product topics and check that the event topics keep old events.

    Returns:
        The transactions and fraud-reports topic names.

    Raises:
        BrokerUnavailableError: No broker answers.
        ReplayError: A topic would refuse or delete the replayed events.
    """
    await ensure_topics(settings, product_topics(settings))
    names = (settings.topic_names["transactions"], settings.topic_names["fraud_reports"])
    admin = AIOKafkaAdminClient(request_timeout_ms=15_000, **client_options(settings))
    try:
        await admin.start()
        wanted = ("retention.ms", "message.timestamp.type", "message.timestamp.before.max.ms")
        described = await describe_topic_configs(admin, names, wanted)
    except KafkaConnectionError as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker answers at {settings.kafka_bootstrap_servers} ({exc})"
        ) from None
    finally:
        await admin.close()
    now_ms = int(time.time() * 1000)
    for topic in described:
        if topic.error_code:
            raise ReplayError(
                f"cannot read the configs of topic {topic.name}: {topic.error_message}"
            )
        problem = topic_config_problem(topic.name, topic.configs, oldest_ms, now_ms)
        if problem:
            raise ReplayError(problem)
    return names


@dataclass(slots=True)
class _OpenBatch:
    builder: Any  # aiokafka BatchBuilder (untyped)
    opened_s: float
    first_seq: int


class _OutageError(Exception):
    """The broker stopped answering: the producer is fenced, the replay must recover."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _is_outage(exc: BaseException) -> bool:
    """Whether a failure means "broker unreachable" rather than "broker refused"."""
    return isinstance(exc, ProduceFencedError | KafkaTimeoutError) or (
        isinstance(exc, KafkaError) and exc.retriable
    )


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return (
        f"{minutes} min {rest} s"
        if minutes and rest
        else f"{minutes} min"
        if minutes
        else f"{rest} s"
    )


class Sender:
    """Sends ordered event frames to the transactions and fraud-reports topics.

    Args:
        settings: Connection settings.
        topics: The transactions and fraud-reports topic names.
        pacer: The schedule of this replay.
        on_progress: Called after each slice.
        resume: Continue after what the topics hold (``--resume``): the frames are the
            whole replay again, and the events each partition already holds are skipped.
        outage_timeout_s: How long to wait for an unreachable broker before giving up.
    """

    def __init__(
        self,
        settings: Settings,
        topics: tuple[str, str],
        pacer: Pacer,
        on_progress: ProgressCallback | None = None,
        *,
        resume: bool = False,
        outage_timeout_s: float = OUTAGE_TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._topic_by_kind = {TRANSACTION: topics[0], REPORT: topics[1]}
        self._pacer = pacer
        self._on_progress = on_progress
        self._resume = resume
        self._outage_timeout_s = outage_timeout_s
        self._hashes = KeyHashes()
        self._open: dict[tuple[int, int], _OpenBatch] = {}
        self._in_flight: collections.deque[tuple[asyncio.Future[Any], int]] = collections.deque()
        self._reports_in_flight: list[asyncio.Future[Any]] = []
        self._producer: AIOKafkaProducer | None = None
        self._fence: ProduceFence | None = None
        self._partitions: dict[int, int] = {}
        # Frames whose events may not all be acknowledged yet: (first index, frame).
        self._retained: collections.deque[tuple[int, pl.DataFrame]] = collections.deque()
        self._next_seq = 0  # index of the next event the source gives
        self._fresh = 0  # events below this index were handed over (and counted) already
        self._skips_counted = 0  # events below this index were counted as skipped already
        self._held: Written = NOTHING  # what the partitions hold of this replay
        self._at_start: dict[Target, Tail] = {}

    async def run(self, frames: Iterable[pl.DataFrame], stop: asyncio.Event) -> ReplayResult:
        """Send every frame's events, in order, at the pace; stop early when ``stop`` is set.

        Whatever was handed to the producer is delivered before this returns, also when
        stopped. A broker that stops answering is waited for (``outage_timeout_s``);
        then every partition gets exactly the events it does not hold yet.

        Raises:
            BrokerUnavailableError: No broker answers at the start.
            ReplayError: Kafka refused an event, or stayed unreachable too long; the
                message says how to resume.
            SourceFailedError: ``frames`` raised; what was sent before is delivered.
        """
        result = ReplayResult()
        started = time.monotonic()
        source = self._numbered(iter(frames))
        try:
            await self._start_producer(first=True)
            self._at_start = await read_tails(self._settings, self._topic_by_kind, self._partitions)
            if self._resume:
                self._held = written(self._at_start, topics=self._topic_by_kind)
                result.resumed = True
            start_held = self._held
            backlog: list[tuple[int, pl.DataFrame]] = []
            while True:
                try:
                    if await self._send_all(itertools.chain(backlog, source), result, stop):
                        result.interrupted = True
                        await self._submit_all()
                        await self._settle()
                    break
                except _OutageError as outage:
                    backlog = list(self._retained)
                    self._retained.clear()
                    await self._recover(outage.cause, result, start_held, stop)
        except KafkaError as exc:
            raise ReplayError(self._failure(exc, result)) from None
        except ResumeError as exc:
            raise ReplayError(str(exc)) from None
        finally:
            result.elapsed_s = time.monotonic() - started
            await self._drop_producer()
        return result

    def _numbered(self, frames: Iterator[pl.DataFrame]) -> Iterator[tuple[int, pl.DataFrame]]:
        for frame in frames:
            base = self._next_seq
            self._next_seq += frame.height
            yield base, frame

    async def _send_all(
        self,
        frames: Iterator[tuple[int, pl.DataFrame]],
        result: ReplayResult,
        stop: asyncio.Event,
    ) -> bool:
        """Send the frames and settle; return True if ``stop`` cut it short."""
        while True:
            try:
                item = next(frames, None)
            except Exception as exc:  # a bad row further on: deliver what went, then say
                if isinstance(exc, _OutageError):
                    raise
                try:
                    await self._submit_all()
                    await self._settle()
                except _OutageError as outage:
                    raise ReplayError(self._failure(outage.cause, result)) from None
                raise SourceFailedError(exc, result) from exc
            if item is None:
                break
            base, frame = item
            self._retained.append(item)
            if await self._send_frame(base, frame, result, stop):
                return True
        await self._submit_all()
        await self._settle()
        return False

    async def _start_producer(self, *, first: bool = False) -> None:
        producer = AIOKafkaProducer(
            enable_idempotence=True,
            max_batch_size=BATCH_BYTES,
            linger_ms=int(LINGER_S * 1000),
            request_timeout_ms=30_000,
            **client_options(self._settings),
        )
        fence = ProduceFence(producer)
        try:
            await producer.start()
            self._partitions = {
                kind: len(await producer.partitions_for(topic))
                for kind, topic in self._topic_by_kind.items()
            }
        except KafkaError as exc:
            with contextlib.suppress(KafkaError):
                await producer.stop()
            if first and isinstance(exc, KafkaConnectionError):
                raise BrokerUnavailableError(
                    f"no Kafka broker answers at {self._settings.kafka_bootstrap_servers} ({exc})"
                ) from None
            raise
        self._producer, self._fence = producer, fence

    async def _drop_producer(self) -> None:
        """Stop the producer; a fenced one fails what it holds at once, sending nothing."""
        producer, self._producer, self._fence = self._producer, None, None
        self._open.clear()
        for future, _ in self._in_flight:  # their failures are known: the outage
            future.add_done_callback(_retrieve)
        self._in_flight.clear()
        self._reports_in_flight = []
        if producer is not None:
            with contextlib.suppress(KafkaError, TimeoutError):  # failing already
                await asyncio.wait_for(producer.stop(), timeout=STOP_TIMEOUT_S)

    async def _recover(
        self, cause: BaseException, result: ReplayResult, start_held: Written, stop: asyncio.Event
    ) -> None:
        """Wait for the broker, then find what each partition holds; report the outage twice."""
        await self._drop_producer()
        since = time.monotonic()
        deadline = since + self._outage_timeout_s
        logger.warning(
            "Kafka unavailable after %d events were handed over (%s): waiting up to %s "
            "(--outage-timeout), then continuing after the last event each partition holds",
            result.stats.events,
            cause,
            _duration(self._outage_timeout_s),
        )
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.is_set():
                why = (
                    "interrupted"
                    if stop.is_set()
                    else f"unreachable for {_duration(self._outage_timeout_s)}"
                )
                raise ReplayError(
                    f"Kafka {why} after {result.stats.events} events were handed over "
                    f"({cause}); {RESUME_HINT}"
                )
            with bootstrap_failures():  # its lines: one per probe, left out of the log
                answers = await broker_answers(self._settings, timeout_s=min(5.0, remaining))
            if answers:
                try:
                    await self._start_producer()
                    tails = await read_tails(
                        self._settings,
                        self._topic_by_kind,
                        self._partitions,
                        timeout_s=min(30.0, remaining),
                    )
                    break
                except KafkaError:
                    await self._drop_producer()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(1.0, max(0.0, remaining)))
        self._held = written(
            tails, since=self._at_start, before=start_held, topics=self._topic_by_kind
        )
        result.outages += 1
        logger.warning(
            "Kafka answers again after %.0f s: continuing after the last event each "
            "partition holds",
            time.monotonic() - since,
        )

    async def _send_frame(
        self, base: int, frame: pl.DataFrame, result: ReplayResult, stop: asyncio.Event
    ) -> bool:
        """Send one frame of events (those not held yet); return True if ``stop`` cut it short."""
        kinds: list[int] = frame["kind"].to_list()
        keys: list[bytes] = frame["key"].to_list()
        values: list[bytes] = frame["value"].to_list()
        hashes = self._hashes(keys)
        tx_partitions, report_partitions = self._partitions[TRANSACTION], self._partitions[REPORT]
        targets = [
            (kind, kafka_partition(h, tx_partitions if kind == TRANSACTION else report_partitions))
            for kind, h in zip(kinds, hashes, strict=True)
        ]
        seqs = list(range(base, base + frame.height))
        keep = to_send(base, targets, values, self._held, self._topic_by_kind)
        if keep is not None:
            counted = max(self._fresh, self._skips_counted)
            kept = set(keep)
            result.skipped += sum(
                1 for p in range(len(seqs)) if p not in kept and seqs[p] >= counted
            )
            self._skips_counted = max(self._skips_counted, base + frame.height)
            frame = frame[keep]
            kinds = [kinds[p] for p in keep]
            keys = [keys[p] for p in keep]
            values = [values[p] for p in keep]
            targets = [targets[p] for p in keep]
            seqs = [seqs[p] for p in keep]
        times: list[int] = frame["time"].to_list()
        pacer = self._pacer
        total, start = len(times), 0
        while start < total:
            if stop.is_set():
                return True
            now = time.monotonic()
            sent_before = result.stats.events
            due = pacer.due(now, times[start : start + SLICE_EVENTS], sent_before)
            if due == 0:
                await self._submit_all()  # what is due goes out before we sleep
                delay = max(PACE_TICK_S, pacer.wait(time.monotonic(), times[start], sent_before))
                with contextlib.suppress(TimeoutError):  # woken early by ``stop`` only
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                self._check_delivered()
                continue
            end = start + due
            reports = [i for i in range(start, end) if kinds[i] == REPORT]
            if reports:
                # The slice's reports go first, and are acknowledged before its
                # transactions are handed over: a worker that has received a transaction
                # then finds every report before it in the log (`ReportEnds`).
                sent_at = (SENT_AT_HEADER, str(time.time_ns() // 1_000_000).encode())
                for index in reports:
                    while not self._append(index, times, keys, values, targets, seqs, sent_at, now):
                        await self._submit(targets[index])
                await self._acknowledge_reports()
            sent_at = (SENT_AT_HEADER, str(time.time_ns() // 1_000_000).encode())
            for index in range(start, end):
                if kinds[index] == REPORT:
                    continue
                while not self._append(index, times, keys, values, targets, seqs, sent_at, now):
                    await self._submit(targets[index])
            fresh = [p for p in range(start, end) if seqs[p] >= self._fresh]
            if fresh:
                count(frame[fresh] if len(fresh) < due else frame.slice(start, due), result.stats)
                self._fresh = seqs[end - 1] + 1
            last = end - 1
            result.last = SentEvent(kinds[last], frame["tx_id"][last], times[last])
            start = end
            await self._submit_stale(now)
            self._check_delivered()
            self._trim_retained()
            if self._on_progress is not None:
                self._on_progress(result.stats, times[last])
            await asyncio.sleep(0)  # let the producer's sender task run
        return False

    def _append(
        self,
        index: int,
        times: list[int],
        keys: list[bytes],
        values: list[bytes],
        targets: list[tuple[int, int]],
        seqs: list[int],
        sent_at: tuple[str, bytes],
        now: float,
    ) -> bool:
        """Append event ``index`` to its partition's open batch; False if that batch is full."""
        target = targets[index]
        batch = self._open.get(target)
        if batch is None:
            batch = self._open_batch(target, now, seqs[index])
        appended = batch.builder.append(
            timestamp=times[index],
            key=keys[index],
            value=values[index],
            headers=[sent_at, (REPLAY_SEQ_HEADER, str(seqs[index]).encode())],
        )
        return appended is not None

    async def _acknowledge_reports(self) -> None:
        """Submit the open report batches and wait until every report batch is acknowledged."""
        for target in [t for t in self._open if t[0] == REPORT]:
            await self._submit(target)
        reports = [f for f in self._reports_in_flight if not f.done()]
        self._reports_in_flight = []
        if reports:
            await asyncio.wait(reports)
        self._check_delivered()

    def _open_batch(self, target: tuple[int, int], now: float, first_seq: int) -> _OpenBatch:
        assert self._producer is not None
        batch = _OpenBatch(self._producer.create_batch(), now, first_seq)
        self._open[target] = batch
        return batch

    async def _submit(self, target: tuple[int, int]) -> None:
        """Hand an open batch to the producer (waits while that partition is backed up)."""
        assert self._producer is not None
        batch = self._open.pop(target)
        batch.builder.close()  # a closed batch is sent at once, without linger
        kind, partition = target
        try:
            future = await self._producer.send_batch(
                batch.builder, self._topic_by_kind[kind], partition=partition
            )
        except KafkaError as exc:
            if _is_outage(exc):
                raise _OutageError(exc) from exc
            raise
        self._in_flight.append((future, batch.first_seq))
        if kind == REPORT:
            self._reports_in_flight.append(future)

    async def _submit_stale(self, now: float) -> None:
        for target in [t for t, b in self._open.items() if now - b.opened_s >= LINGER_S]:
            await self._submit(target)

    async def _submit_all(self) -> None:
        for target in list(self._open):
            await self._submit(target)

    def _check_delivered(self) -> None:
        """Forget delivered batches; raise the first failure (an outage, or a refusal)."""
        in_flight = self._in_flight
        for future, _ in in_flight:
            if future.done():
                exc = future.exception()
                if exc is not None:
                    if _is_outage(exc):
                        raise _OutageError(exc)
                    raise exc
        while in_flight and in_flight[0][0].done():
            in_flight.popleft()
        if self._fence is not None and self._fence.cause is not None:
            raise _OutageError(self._fence.cause)

    def _trim_retained(self) -> None:
        """Forget frames whose events are all acknowledged."""
        pending = [seq for future, seq in self._in_flight if not future.done()]
        pending += [batch.first_seq for batch in self._open.values()]
        low = min(pending, default=self._fresh)
        retained = self._retained
        while retained and retained[0][0] + retained[0][1].height <= low:
            retained.popleft()

    async def _settle(self) -> None:
        """Wait until every batch handed to the producer is acknowledged."""
        while self._in_flight:
            await asyncio.wait([self._in_flight[0][0]])
            self._check_delivered()
        self._trim_retained()

    def _failure(self, exc: BaseException, result: ReplayResult) -> str:
        where = f" after {result.stats.events} events were handed over"
        if result.last is not None:
            where += f" (the last: {result.last.describe()})"
        if isinstance(exc, InvalidTimestampError):
            return (
                f"the broker refused the events' timestamps{where}: raise the topic's "
                "message.timestamp.before.max.ms / after.max.ms"
            )
        return f"Kafka failed{where}: {type(exc).__name__}: {exc}; {RESUME_HINT}"
