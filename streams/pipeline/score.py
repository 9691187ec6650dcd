"""The score agent's work on one micro-batch: the critical path of the product.

Per micro-batch (``streams.faustcompat.rawbatches``), in this order:

1. Decode and validate every message; bad ones (and ones over the size limit, or timed
   in the future) are set aside for the dead-letter topic with the reason; one on another
   partition than its key's is re-routed there (``streams.pipeline.intake``).
   Transactions whose terminal features are not final yet wait, per source partition
   in order, until the terminal agents' watermarks say they are
   (``streams.pipeline.watermarks``); steps 2-7 run for those that can go now, then
   for the rest as they can.
2. Load the customers' window states: one round trip for the batch (``prefetch``).
3. Apply each transaction to its customer's state (in memory; a customer appearing twice
   sees its first transaction) and compute the transaction and customer features. A
   transaction later than the customer's allowed lateness changes nothing and is
   dead-lettered (``too_late``): its features could not be exact. One whose tx_id the
   customer's state holds is skipped when it is the same transaction (a producer's
   retry: counted once) and dead-lettered (``conflicting_duplicate``) when its content
   differs.
4. Read the terminals' states for the whole batch, one round trip, and add the terminal
   features (7-day delayed windows, maintained by the terminal agents).
5. Score the batch with one ``predict_proba``; explain the alerted rows only.
6. Send: alerts, forwards to the terminal agents (one message per terminal partition,
   ``streams.pipeline.forwards``), score records, dead letters. Alerts and score records
   carry the transaction's ``traceparent`` as a child (``streams.tracecontext``), forward
   rows the ``traceparent`` itself.
7. Only then write the customers' states to the table.

Why 6 before 7: the ``redis://`` store commits table state together with the source
offsets it covers, after waiting for the producer to deliver everything sent before the
snapshot. An event whose state is committed therefore has its alert delivered; a crash
before the commit replays the event, whose alert is sent again with the same alert_id
(at-least-once, deduplicable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import attrgetter
from typing import Any, Final

import numpy as np

from features.online import (
    DuplicateTransactionError,
    EntityState,
    EventTooOldError,
    OnlineFeatures,
    StateLayoutError,
)
from features.spec import Entity
from streams.contracts import DecodeError, Problem, decode_transaction
from streams.kafka import plausible_sent_at_ms, sent_at_ms
from streams.metrics import PipelineMetrics
from streams.pipeline.forwards import Row, encode_forwards
from streams.pipeline.inputs import InputRecord
from streams.pipeline.intake import EventKind, Intake
from streams.pipeline.model import ModelSlot
from streams.pipeline.outputs import (
    Send,
    alert_value,
    score_value,
    send_dead_letters,
)
from streams.pipeline.tables import DecodedStates, TableAccess
from streams.pipeline.terminals import TerminalLookup
from streams.pipeline.watermarks import Pending, ReportEnds, SourceClock, WatermarkGate
from streams.records import Transaction
from streams.tablestore.partition_store import PartitionStore
from streams.tracecontext import TRACEPARENT, child_of, parent_of

logger = logging.getLogger(__name__)

#: Least seconds between two declarations of the same held sources: each round is a
#: message to every terminal partition, and at live pace with small batches a round per
#: batch doubled the messages on the forwards topic. A later round, or the release
#: task's next look, sends what was held back; marks only move forward, so a late
#: declaration is never a wrong one.
DECLARE_EVERY_S = 0.1
#: Most transactions held back at once; beyond it the agent waits (`ScoreStage.process`).
HELD_MAX = 50_000
#: Held transactions per source partition whose terminal partitions' watermarks a
#: release reads in one round trip (`ScoreStage._release`).
READ_AHEAD = 256
#: A gap this long between two releases of held transactions means the event loop was
#: held (or nothing was held): hold time limits count from after it.
STALL_S = 1.0
#: Decoded customer states kept between micro-batches (`DecodedStates`).
CUSTOMER_STATES_KEPT = 20_000
#: Oldest producer send time (``fraudstream-sent-ms``, else the broker's timestamp) read as
#: one: an alert's latency is measured from it. A backlog after a week's outage is older.
MAX_SENT_AGE_MS = 7 * 86_400_000


@dataclass(frozen=True)
class ScoreTopics:
    """Where the score agent sends.

    Attributes:
        source: The transactions topic (named in dead-letter headers).
        alerts: Alert events.
        scores: Score records, or None when they are off.
        forwards: Transactions re-keyed by terminal, for the terminal agents.
        dlq: Dead letters.
    """

    source: str
    alerts: str
    scores: str | None
    forwards: str
    dlq: str


class _Held:
    """A valid transaction held back until its terminal reads are final.

    ``round`` is the scorer's hold round when it was taken: one still held when the
    round ends (`ScoreStage._declare_held`) has waited, and its wait is timed.
    """

    __slots__ = ("event", "pending", "round", "since", "transaction")

    def __init__(
        self,
        event: InputRecord,
        transaction: Transaction,
        pending: Pending,
        since: float,
        round_: int,
    ) -> None:
        self.event = event
        self.transaction = transaction
        self.pending = pending
        self.since = since
        self.round = round_


class _SourceHeld:
    """The held transactions of one source partition, in offset order.

    Only the first can be ready (a later one waits for it, so a card's transactions keep
    their order), so each release looks at the first ones only, not at every held
    transaction. ``lowest`` is a monotonic queue of the held event times (the classic
    sliding-window minimum): its first element is the earliest held time at any moment,
    kept in O(1) per transaction, for the watermark the source declares.
    """

    __slots__ = ("items", "latest", "lowest")

    def __init__(self) -> None:
        self.items: deque[_Held] = deque()
        self.lowest: deque[_Held] = deque()
        self.latest = -1

    def append(self, held: _Held) -> None:
        self.items.append(held)
        time_ms = held.pending.time_ms
        lowest = self.lowest
        while lowest and lowest[-1].pending.time_ms >= time_ms:
            lowest.pop()
        lowest.append(held)
        if time_ms > self.latest:
            self.latest = time_ms

    def popleft(self) -> _Held:
        held = self.items.popleft()
        if self.lowest[0] is held:
            self.lowest.popleft()
        return held

    @property
    def earliest(self) -> int:
        return self.lowest[0].pending.time_ms


class _Scored:
    """One valid transaction of the batch on its way through (slots: no dict per event).

    ``amount`` is the transaction's amount as a float, converted once: a Decimal's
    ``float()`` costs about 0.4 us, and the features and the forward row each need it.
    """

    __slots__ = ("amount", "event", "transaction", "vector")

    def __init__(
        self, event: InputRecord, transaction: Transaction, vector: list[float], amount: float
    ) -> None:
        self.event = event
        self.transaction = transaction
        self.vector = vector
        self.amount = amount


class ScoreStage:
    """Scores micro-batches of transaction events.

    Args:
        online: The compiled feature set (customer and terminal windows).
        customers: The customer table's store (bytes keys and values; Redis in production).
        terminals: Batched reads of terminal states.
        slot: The active model.
        send: Queues a message on the producer.
        topics: Output topics.
        metrics: The worker's metrics.
        max_event_bytes: Larger messages are dead-lettered unread.
        intake: The partition and time checks (default: no partition check, events up
            to five minutes ahead of the clock).
        gate: Holds back transactions whose terminal reads are not final yet
            (`streams.pipeline.watermarks`); None reads terminal state as it is.
        clock: Declares this scorer's source watermarks on its forwards; None sends
            forwards without them.
    """

    def __init__(
        self,
        *,
        online: OnlineFeatures,
        customers: PartitionStore,
        terminals: TerminalLookup,
        slot: ModelSlot,
        send: Send,
        topics: ScoreTopics,
        metrics: PipelineMetrics,
        max_event_bytes: int,
        intake: Intake | None = None,
        gate: WatermarkGate | None = None,
        clock: SourceClock | None = None,
    ) -> None:
        self.online = online
        self.customer_windows = online.entities[Entity.CUSTOMER]
        self.terminal_windows = online.entities[Entity.TERMINAL]
        self.names = online.names
        self.customers = customers
        self.terminals = terminals
        self.slot = slot
        self.send = send
        self.topics = topics
        self.metrics = metrics
        self.max_event_bytes = max_event_bytes
        self.intake = intake or Intake(
            partitions=None, max_ahead_ms=300_000, send=send, metrics=metrics
        )
        self.gate = gate
        self.clock = clock
        #: Reads the reports partitions' ends for held transactions (`ReportEnds`).
        self.report_ends: ReportEnds | None = None
        #: The rebalance count (Faust's ``app.rebalancing_count``): held transactions
        #: of an older one are dropped, since every partition is read again from the
        #: offsets stored with the state.
        self.generation: Callable[[], int] = lambda: 0
        #: Whether a dependency (Kafka, Redis) is unavailable now: a hold's time limit
        #: counts only time when both answer (`ScoreStage._release`).
        self.unavailable: Callable[[], bool] = lambda: False
        self._waits_from = 0.0
        self._last_release = 0.0
        self._held: dict[int, _SourceHeld] = {}
        self._held_count = 0
        #: The rebalance count of the batches in hand (`generation` when they came).
        self._generation = 0
        self._hold_round = 0
        #: Per source partition, the offset it is read again from after a rebalance.
        self._behind: dict[int, int] = {}
        #: Per source partition, the first transaction scored since the rebalance began
        #: and whose state was not written (`_score`): it is read again too.
        self._unwritten: dict[int, int] = {}
        self._declared: dict[int, int] = {}
        self._declared_at = 0.0
        self._holding = asyncio.Lock()
        self._access = TableAccess(customers)
        # Few customers transact twice within minutes: a small cache of decoded states
        # serves replays and bursts without many objects for the collector to walk.
        self._decoded = DecodedStates("customer", limit=CUSTOMER_STATES_KEPT)

    @property
    def held(self) -> int:
        """Transactions held back now, waiting for final terminal reads."""
        return self._held_count

    async def process(self, events: Sequence[InputRecord]) -> None:
        """Score one micro-batch; see the module docstring for the steps."""
        started = time.perf_counter()
        if events:
            self._observe_delays(events[0].message)
        model = await self.slot.wait()
        valid, rejected = await self._intake(events)
        if self.gate is None:
            generation = self.generation()
            if generation != self._generation:
                self._rebalanced(generation)
            if self._behind:
                valid = self._after_rebalance(valid)
            await self._score(valid, rejected, model)
        else:
            async with self._holding:
                await self._score_or_hold(valid, rejected, model)

        self.metrics.batch_size.observe(len(events))
        self.metrics.processing_latency.observe(time.perf_counter() - started)

    # -- holding transactions back until their terminal reads are final ---------------

    async def _score_or_hold(
        self,
        valid: list[tuple[InputRecord, Transaction]],
        rejected: list[tuple[InputRecord, DecodeError]],
        model: Any,
    ) -> None:
        """Score what reads final terminal state now (held ones first); hold the rest.

        Held transactions stay in memory across batches, so the agent goes on taking
        the batches of its other partitions, whose forwards are what moves the
        watermarks: a partition held back never holds back another. If more than
        `HELD_MAX` wait, the agent itself waits until some can go, or a rebalance begins.
        """
        gate = self.gate
        assert gate is not None
        generation = self.generation()
        if generation != self._generation:
            self._rebalanced(generation)
        if self._behind:
            valid = self._after_rebalance(valid)
        held = self._held
        now = time.monotonic()
        received = time.time() * 1000
        now_ms = int(received)
        round_ = self._hold_round
        arrived = []
        for event, tx in valid:
            message = event.message
            produced = _sent_at(message, now_ms)
            source = message.partition
            pending = Pending(source, tx.tx_time, self._terminal_partition(tx), produced, received)
            arrived.append(pending)
            queue = held.get(source)
            if queue is None:
                queue = held[source] = _SourceHeld()
            queue.append(_Held(event, tx, pending, now, round_))
        self._held_count += len(valid)
        if self.report_ends is not None:
            self.report_ends.received(arrived)
        await self._release(gate, rejected, model)
        while self._held_count > HELD_MAX:
            if self.generation() != generation:
                # A rebalance began. Its revocation waits for this batch to be
                # acknowledged, and what the held ones wait for may be a partition it
                # moves (a killed worker's): waiting on would hold both until the time
                # limit, then score tens of thousands inexactly (a 244k catch-up with a
                # worker SIGKILLed: 113,161 inexact reads). They are dropped and read
                # again, like every held one at a rebalance.
                return
            await asyncio.sleep(gate.pause_s)
            await self._release(gate, [], model)

    def _rebalanced(self, generation: int) -> None:
        """The first batch since a rebalance began: drop the held transactions.

        A rebalance seeks every partition back to the offsets stored with the state
        (streams.tablestore.resume), which never pass a held transaction, nor one whose
        state was not written because the rebalance began while it was scored: those
        are read again, by whichever worker owns them. Until they come back, the later
        transactions of their partitions already on their way here are dropped
        (`_after_rebalance`), so no card sees its transactions out of order or without
        the ones before. Such a transaction could even come in the new generation: Faust
        resumes the flow and the partitions a loop turn before its seek runs, and a
        fetch made before the rebalance handed over what follows the last one taken
        (without this, a catch-up with a worker killed lost the 500 transactions a
        rebalance caught in the middle of their batch from their cards' state). The
        ``redis://`` store now holds the flow through that turn (``resume.hold_flow``);
        this stays as the second line, and for the ``memory://`` store.
        """
        behind = dict(self._unwritten)
        for source, queue in self._held.items():
            first = queue.items[0].event.message.offset
            behind[source] = min(first, behind.get(source, first))
        if self._held_count:
            logger.info("rebalanced: %d held transactions are read again", self._held_count)
        self._behind = behind
        self._unwritten = {}
        self._held = {}
        self._held_count = 0
        self._generation = generation

    def _after_rebalance(
        self, valid: list[tuple[InputRecord, Transaction]]
    ) -> list[tuple[InputRecord, Transaction]]:
        """Drop the transactions of partitions read again (`_rebalanced`) until those return."""
        behind = self._behind
        kept = []
        for event, tx in valid:
            message = event.message
            first = behind.get(message.partition)
            if first is not None:
                if message.offset > first:
                    continue  # delivered before the seek: read again after it
                del behind[message.partition]  # the partition reads from the seek on
            kept.append((event, tx))
        return kept

    async def release_held(self) -> None:
        """Score the held transactions that can go now (a task calls this between batches)."""
        gate = self.gate
        if gate is None or not self._held:
            return
        model = self.slot.active
        if model is None:
            return
        async with self._holding:
            if self._held and self.generation() == self._generation:
                await self._release(gate, [], model)

    async def _release(
        self,
        gate: WatermarkGate,
        rejected: list[tuple[InputRecord, DecodeError]],
        model: Any,
    ) -> None:
        """Score the held transactions that are final (all, if one waited too long).

        Per source partition, from its first held transaction on, as long as each reads
        final state by the last reading of the watermarks. For the partitions whose first
        one does not, the watermarks of the terminal partitions their next `READ_AHEAD`
        transactions read are read again (one round trip), with the reports partitions'
        ends if the first ones need them (`ReportEnds`), and they are looked at once
        more. Only the first held transactions are looked at, never all of them: a
        backlog can hold tens of thousands.
        """
        queues = self._held
        now = time.monotonic()
        if self.unavailable() or now - self._last_release > STALL_S:
            # Kafka or Redis is down, or the loop was held (a blocking Redis call): the
            # watermarks cannot move meanwhile, so no hold has waited in vain. Holds
            # count their time limit from when both answer again; giving up during an
            # outage scored transactions with terminal state that was not final.
            self._waits_from = now
        self._last_release = now
        if queues and now - max(
            self._waits_from, min(q.items[0].since for q in queues.values())
        ) > (gate.max_wait_s):
            held = [h for queue in queues.values() for h in queue.items]
            gate.gave_up(held)
            self._held = {}
            self._held_count = 0
            self._observe_holds(held)
            await self._score(
                [(h.event, h.transaction) for h in held], rejected, model, final=False
            )
            self._declared.clear()
            if self.clock is not None:
                self.clock.release()
            return
        go: list[_Held] = []
        if queues:
            blocked = self._take_final(gate, list(queues), go)
            if blocked:
                heads = [queues[source].items[0].pending for source in blocked]
                gate.watermarks.read(self._terminal_partitions_ahead(blocked))
                ends = self.report_ends
                if ends is not None:
                    watermarks, needs = gate.watermarks, gate.needs
                    await ends.attach(
                        [
                            p
                            for p in heads
                            if p.reports_end is None
                            and not watermarks.reports_cover(p.terminal_partition, p.time_ms, needs)
                        ]
                    )
                self._take_final(gate, blocked, go)
        if go or rejected:
            self._observe_holds(go)
            await self._score([(h.event, h.transaction) for h in go], rejected, model)
        await self._declare_held()

    def _terminal_partitions_ahead(self, sources: Sequence[int]) -> set[int]:
        """The terminal partitions the next `READ_AHEAD` held transactions of ``sources`` read."""
        queues = self._held
        every = self.terminals.partition_of.partitions
        partitions: set[int] = set()
        for source in sources:
            for held in islice(queues[source].items, READ_AHEAD):
                partitions.add(held.pending.terminal_partition)
            if len(partitions) >= every:
                break
        return partitions

    def _take_final(
        self, gate: WatermarkGate, sources: Sequence[int], go: list[_Held]
    ) -> list[int]:
        """Move the leading final transactions of ``sources`` to ``go``; return the blocked ones.

        A transaction that lacks only its reports partition's end takes it from the last
        reading when that reading is recent enough for it (`ReportEnds.attach_known`).
        """
        queues = self._held
        covers = gate.covers
        ends = self.report_ends
        blocked: list[int] = []
        moved = len(go)
        for source in sources:
            queue = queues[source]
            items = queue.items
            while items:
                pending = items[0].pending
                if not covers(pending) and not (
                    ends is not None
                    and pending.reports_end is None
                    and ends.attach_known(pending)
                    and covers(pending)
                ):
                    blocked.append(source)
                    break
                go.append(queue.popleft())
            if not items:
                del queues[source]
        self._held_count -= len(go) - moved
        return blocked

    def _observe_holds(self, released: Sequence[_Held]) -> None:
        """Time the holds that end (transactions scored as soon as read: no observation)."""
        now = time.monotonic()
        round_ = self._hold_round
        waited = [now - h.since for h in released if h.round < round_]
        if waited:
            self.gate.observe(max(waited))  # type: ignore[union-attr]

    async def _declare_held(self) -> None:
        """Tell every terminal partition how far the held transactions' sources are.

        Without it a source that has sent nothing yet (every source, when workers start
        on a backlog) would hold every reader back, itself included. Sent when what the
        held sources declare changes. Ends the hold round: the transactions still held
        have waited. At most every `DECLARE_EVERY_S` for sources declared already.
        """
        self._hold_round += 1
        clock = self.clock
        queues = self._held
        if clock is None:
            return
        clock.release()
        if not queues:
            self._declared.clear()
            return
        for source, queue in queues.items():
            clock.hold(source, (queue.earliest, queue.latest))
            # The store remembers where a held partition resumes, before any write of
            # it: Faust commits the offsets of held transactions (they were taken off
            # the stream); the store's offsets, which a restarted or new owner resumes
            # from, must not pass them (a partition whose every transaction is held has
            # written nothing).
            self._access.note_position(queue.items[0].event)
        declared = clock.declarations(queues)
        if declared == self._declared:
            return
        now = time.monotonic()
        if declared.keys() <= self._declared.keys() and now - self._declared_at < DECLARE_EVERY_S:
            return  # these sources declared lately; a source not declared yet goes at once
        self._declared = declared
        self._declared_at = now
        value = encode_forwards([], declared)
        for partition in range(self.terminals.partition_of.partitions):
            await self.send(self.topics.forwards, None, value, partition, None)

    async def _intake(
        self, events: Sequence[InputRecord]
    ) -> tuple[list[tuple[InputRecord, Transaction]], list[tuple[InputRecord, DecodeError]]]:
        """Decode and check every message: valid transactions, and the rest with why."""
        return await self.intake.admit(events, TRANSACTIONS, self.max_event_bytes)

    async def _score(
        self,
        valid: list[tuple[InputRecord, Transaction]],
        rejected: list[tuple[InputRecord, DecodeError]],
        model: Any,
        *,
        final: bool = True,
    ) -> None:
        """Steps 2-7; ``final`` False counts every terminal read as inexact (a wait gave up)."""
        generation = self._generation
        scored, states, last_write = self._customer_features(valid, rejected)
        if scored:
            self._terminal_features(scored, final)
            matrix = np.array([s.vector for s in scored], dtype=np.float64)
            scores = model.scorer.score_batch(matrix)
            await self._send_alerts(scored, matrix, scores, model)
            await self._send_forwards_and_scores(scored, scores, model)
        await send_dead_letters(self.send, self.topics.dlq, rejected, self.metrics)
        if self.generation() != generation:
            # A rebalance began while this batch was on its way (the release task is not
            # waited for by Faust's revocation): the partitions resume at the offsets
            # stored before it, so these transactions are read again; their state must
            # not be written (it would count them twice). Outputs are at least once.
            logger.info(
                "rebalanced while scoring %d transactions: their state is not written; "
                "they are read again",
                len(scored),
            )
            unwritten = self._unwritten
            for event, _ in valid:
                message = event.message
                first = unwritten.get(message.partition)
                if first is None or message.offset < first:
                    unwritten[message.partition] = message.offset
            return
        self._write_customers(states, last_write)
        self.metrics.transactions.inc(len(scored))
        if scored:
            self.metrics.observe_event_times(scorer_ms=max(s.transaction.tx_time for s in scored))

    def _terminal_partition(self, tx: Transaction) -> int:
        return self.terminals.partition_of(tx.terminal_id.encode())

    def _observe_delays(self, oldest: Any) -> None:
        """Where the batch's oldest transaction waited: in Kafka and the fetcher, or here.

        Faust's monitor stamps each message (``time_in``, monotonic) when its consumer
        hands it to the streams. It was produced at its ``fraudstream-sent-ms`` header
        (replays set it; their Kafka timestamps are historical event times), else at its
        Kafka timestamp.
        """
        time_in = getattr(oldest, "time_in", None)
        if time_in is None:
            return
        waited = max(0.0, time.monotonic() - time_in)
        self.metrics.queue_delay.observe(waited)
        now = time.time()
        sent_ms = plausible_sent_at_ms(sent_at_ms(oldest.headers), int(now * 1000), MAX_SENT_AGE_MS)
        sent = oldest.timestamp if sent_ms is None else sent_ms / 1000
        self.metrics.fetch_delay.observe(max(0.0, now - waited - sent))

    # -- features -------------------------------------------------------------------

    def _customer_features(
        self,
        valid: list[tuple[InputRecord, Transaction]],
        rejected: list[tuple[InputRecord, DecodeError]],
    ) -> tuple[list[_Scored], dict[bytes, EntityState], dict[bytes, InputRecord]]:
        """Apply each transaction to its customer's state; compute its first features."""
        by_partition: dict[int, list[bytes]] = {}
        for event, tx in valid:
            by_partition.setdefault(event.message.partition, []).append(tx.customer_id.encode())
        self._access.prefetch(by_partition)
        states: dict[bytes, EntityState] = {}
        last_write: dict[bytes, InputRecord] = {}
        scored: list[_Scored] = []
        windows = self.customer_windows
        new_vector = self.online.new_vector
        transaction_into = self.online.transaction_into
        repeated = 0
        for event, tx in valid:
            key = tx.customer_id.encode()
            state = states.get(key)
            if state is None:
                state = self._load_customer(event, key)
                states[key] = state
            vector = new_vector()
            amount = float(tx.amount)
            transaction_into(tx.tx_time, amount, vector)
            try:
                windows.update_into(state, tx.tx_time, amount, tx.terminal_id, vector, tx.tx_id)
            except EventTooOldError as exc:
                rejected.append((event, DecodeError(Problem.TOO_LATE, str(exc), "tx_time")))
                continue
            except DuplicateTransactionError as exc:
                if exc.identical:
                    repeated += 1
                else:
                    problem = DecodeError(Problem.CONFLICTING_DUPLICATE, str(exc), "tx_id")
                    rejected.append((event, problem))
                continue
            last_write[key] = event
            scored.append(_Scored(event, tx, vector, amount))
        if repeated:
            self.metrics.duplicates_skipped.labels(source="scorer").inc(repeated)
        return scored, states, last_write

    def _load_customer(self, event: InputRecord, key: bytes) -> EntityState:
        raw = self._access.get(event, key)
        return self._decoded.take(event.message.partition, key, raw)

    def _terminal_features(self, scored: list[_Scored], final: bool = True) -> None:
        terminal_ids = [s.transaction.terminal_id.encode() for s in scored]
        states = self.terminals.states(terminal_ids)
        windows = self.terminal_windows
        inexact = 0
        for item, terminal in zip(scored, terminal_ids, strict=True):
            tx = item.transaction
            state = states[terminal]
            try:
                windows.read_into(state, tx.tx_time, item.amount, item.vector)
            except (EventTooOldError, StateLayoutError):
                inexact += 1
                windows.read_into(state, tx.tx_time, item.amount, item.vector, refuse_late=False)
        if not final:
            inexact = len(scored)
        if inexact:
            self.metrics.inexact_terminal_reads.inc(inexact)

    # -- outputs --------------------------------------------------------------------

    async def _send_alerts(
        self,
        scored: list[_Scored],
        matrix: np.ndarray[Any, np.dtype[np.float64]],
        scores: np.ndarray[Any, np.dtype[np.float64]],
        model: Any,
    ) -> None:
        alerted = np.flatnonzero(scores >= model.threshold)
        if not len(alerted):
            return
        if model.explainer is not None:
            reasons = model.explainer.explain(matrix[alerted], scores[alerted])
        else:
            reasons = [[] for _ in alerted]
        names = self.names
        latency = self.metrics.event_to_alert_latency
        for row, why in zip(alerted.tolist(), reasons, strict=True):
            item = scored[row]
            emitted_at = int(time.time() * 1000)
            latency_ms = max(0, emitted_at - _sent_at(item.event.message, emitted_at))
            tx = item.transaction
            value = alert_value(
                tx,
                score=float(scores[row]),
                threshold=model.threshold,
                model_version=model.version,
                reasons=why,
                features=dict(zip(names, item.vector, strict=True)),
                emitted_at=emitted_at,
                latency_ms=latency_ms,
            )
            trace = child_of(parent_of(item.event.message.headers))
            await self.send(self.topics.alerts, item.event.key, value, None, [(TRACEPARENT, trace)])
            latency.observe(latency_ms / 1000)
        self.metrics.alerts.inc(len(alerted))

    async def _send_forwards_and_scores(
        self,
        scored: list[_Scored],
        scores: np.ndarray[Any, np.dtype[np.float64]],
        model: Any,
    ) -> None:
        send = self.send
        partition_of = self.terminals.partition_of
        by_partition: dict[int, list[Row]] = {}
        # A row carries its transaction's traceparent (`streams.pipeline.forwards`): headers
        # are only scanned when there are any, so untraced traffic pays one test.
        traces: dict[int, list[tuple[int, str]]] = {}
        for item in scored:
            message = item.event.message
            tx = item.transaction
            row = (
                message.partition,
                message.offset,
                tx.tx_id,
                tx.customer_id,
                tx.terminal_id,
                tx.tx_time,
                item.amount,
            )
            partition = partition_of(tx.terminal_id.encode())
            rows = by_partition.get(partition)
            if rows is None:
                rows = by_partition[partition] = [row]
            else:
                rows.append(row)
            headers = message.headers
            if headers:
                parent = parent_of(headers)
                if parent is not None:
                    traces.setdefault(partition, []).append((len(rows) - 1, parent.decode()))
        clock = self.clock
        if clock is None:
            for partition, rows in by_partition.items():
                value = encode_forwards(rows, None, traces.get(partition))
                await send(self.topics.forwards, None, value, partition, None)
        else:
            # Each message declares its sources' watermarks with the rows they cover, so a
            # terminal partition applies both in one write; the clock moves only after
            # every row is queued, so a tick (`streams.pipeline.watermarks`) sent meanwhile
            # never declares a watermark ahead of rows not yet sent.
            newest: dict[int, int] = {}
            for item in scored:
                source = item.event.message.partition
                tx_time = item.transaction.tx_time
                if tx_time > newest.get(source, -1):
                    newest[source] = tx_time
            declared = clock.declarations_after(newest)
            for partition, rows in by_partition.items():
                value = encode_forwards(rows, declared, traces.get(partition))
                await send(self.topics.forwards, None, value, partition, None)
            for source, tx_time in newest.items():
                clock.saw(source, tx_time)
        if self.topics.scores is None:
            return
        scored_at = int(time.time() * 1000)
        names = self.names
        for item, score in zip(scored, scores.tolist(), strict=True):
            value = score_value(
                item.transaction,
                score=score,
                threshold=model.threshold,
                model_version=model.version,
                features=dict(zip(names, item.vector, strict=True)),
                scored_at=scored_at,
            )
            trace = child_of(parent_of(item.event.message.headers))
            await send(self.topics.scores, item.event.key, value, None, [(TRACEPARENT, trace)])

    def _write_customers(
        self, states: dict[bytes, EntityState], last_write: dict[bytes, InputRecord]
    ) -> None:
        """Write each changed customer state under the last event that changed it."""
        put = self._access.put
        keep = self._decoded.keep
        for key, event in last_write.items():
            state = states[key]
            raw = state.to_bytes()
            put(event, key, raw)
            keep(event.message.partition, key, raw, state)


def _sent_at(message: Any, now_ms: int) -> int:
    """When the producer sent a transaction, as well as the record tells it.

    Its ``fraudstream-sent-ms`` header (replays set it; their broker timestamps are
    historical event times), else the broker's timestamp, each only when plausible
    (`streams.kafka.plausible_sent_at_ms`); else when this worker received it, so a
    wrong clock gives a latency that is too low, never one of decades.
    """
    sent = plausible_sent_at_ms(sent_at_ms(message.headers), now_ms, MAX_SENT_AGE_MS)
    if sent is None:
        timestamp = message.timestamp
        if timestamp is not None:
            sent = plausible_sent_at_ms(int(timestamp * 1000), now_ms, MAX_SENT_AGE_MS)
    if sent is None:
        time_in = getattr(message, "time_in", None)  # Faust's monotonic receipt stamp
        waited = 0.0 if time_in is None else max(0.0, time.monotonic() - time_in)
        sent = now_ms - int(waited * 1000)
    return sent


def _wrong_key(key: bytes | None) -> DecodeError:
    return DecodeError(
        Problem.WRONG_KEY,
        f"the message key {key!r:.80} is not the customer_id: transactions must be keyed by "
        "customer so that one worker holds each customer's state",
    )


#: The transactions topic's events, for `Intake.admit`.
TRANSACTIONS: Final[EventKind[Transaction]] = EventKind(
    decode=decode_transaction,
    key=attrgetter("customer_id"),
    wrong_key=_wrong_key,
    time_ms=attrgetter("tx_time"),
    time_field="tx_time",
)
