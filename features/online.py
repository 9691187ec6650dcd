"""Online engine: incremental features from one small state per customer and per terminal.

This is what the agents run for every event and what the Redis-backed tables hold
(`EntityState.to_bytes`). Pure Python and event time only: no clock, no I/O, so a replay at
any speed computes the same features, and `features.offline` computes them too (the parity
test proves it).

State. One `EntityState` per entity keeps the exact time (millisecond offset from a base,
4 bytes) of each of the entity's transactions in the last *retention* of event time, plus
what the entity's aggregations need: the amount (8 bytes) and the peer fingerprint
(4 bytes) of each transaction, and the transaction time and id fingerprint (12 bytes) of
each reported fraud (plus, for features that need it, when the fraud was reported:
8 bytes). Retention is the longest look-back of the entity's features (window
plus delay) plus its allowed lateness (`features.spec.EntityPolicy`). Windows are
therefore exact at millisecond resolution for any t: there are no buckets to misalign.

Bound. A state never holds more than ``max_events`` transactions and ``max_frauds``
reports (`features.spec.CUSTOMER_POLICY`, `features.spec.TERMINAL_POLICY`), so it never
takes more than `EntityWindows.max_state_bytes` bytes. If an entity exceeds it, the oldest
are dropped (the features are then lower bounds) and counted in ``EntityState.overflow``.

Semantics, precisely (the watermark is the newest event time the entity has seen; a
report's event time for its terminal is its transaction's time):

- In-order transaction: appended; its windows include itself and everything before it.
- Equal timestamps: a transaction sees those with the same timestamp that arrived before
  it, and not those after it. Offline counts by ``(tx_time, tx_id)``; the two agree when
  ties arrive in ``tx_id`` order.
- Out-of-order transaction, at most ``allowed_lateness`` behind the watermark: inserted at
  its place in time (after equal timestamps already there); its features are computed as
  of its own time over what has arrived (later transactions are not in its windows), and
  every later read sees it as if it had arrived in order. Its windows are complete,
  because retention covers its reach.
- Transaction whose id the state already holds (entities whose policy dedupes: the
  customer; ids are kept for the transactions within the allowed lateness of the
  watermark): refused with `DuplicateTransactionError`, no state changed; ``identical``
  says whether time, amount and peer are those stored (a producer's retry) or not (an id
  reused for another payment). The offline engine keeps the first row of an id.
- Transaction more than ``allowed_lateness`` behind the watermark: refused with
  `EventTooOldError`, no state changed (its windows would reach history already dropped:
  any number computed would disagree with the offline engine). The agent sends it to the
  dead-letter topic with the reason.
- Fraud report: stored by its transaction's time, with when it was reported; counts for
  every read at a time t whose window holds that time and with ``reported_at <= t - k``,
  k the aggregation's known delay (an hour in the spec, `features.spec.KNOWN_FRAUD_DELAY`;
  the offline engine's rule). Terminal features thus read only reports at least an hour
  old, so a worker can wait until the terminal agents have applied them without waiting
  on the live report stream. A report never moves the entity's clock (the watermark is the
  newest *transaction*): reports consumed ahead of the transactions, as in a backlog,
  change no window and refuse no transaction, and the order in which reports and
  transactions arrive changes no state. A duplicate report (same transaction time and
  id) keeps the earliest report time. A report older than the retention is dropped and
  `EntityWindows.record_fraud` says so: no read that is not itself refused can need it.
- A report and a transaction with the same timestamp: the parity contract processes the
  report first (`stream_events`). Only a known delay of zero makes that order matter
  (the offline engine then counts a fraud when ``reported_at <= t``); the spec's features
  never count a report at the read's own time.
- Report times: a state whose features need them (`features.aggregations.KnownFrauds`,
  `features.aggregations.FraudRisk`) also keeps when each fraud was reported, absolute
  epoch milliseconds.
- Expiry: an entity whose watermark is at least its retention behind the stream's event
  time (`EntityWindows.is_expired`) has nothing left in any window; deleting its state is
  unobservable to any later event not itself older than that time by the allowed lateness.
  Expiry is by event time only; a wall-clock TTL would make replays differ.
- Feature set changes: a state records which columns it keeps (``EntityState.layout``). A
  state written under a feature set that did not keep a column now needed is not misread:
  `EntityWindows.read_into` refuses it, updates restart its history and count it in
  ``overflow``.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from typing import Final, NamedTuple

import polars as pl

from features import dataset
from features.aggregations import (
    OnlineWindow,
    StateColumn,
    TransactionAttribute,
    WindowAggregation,
    peer_fingerprint,
    report_fingerprint,
)
from features.spec import DEFAULT_FEATURES, Entity, FeatureSet

#: Largest time offset from a state's base (unsigned 32-bit milliseconds, 49.7 days).
MAX_OFFSET_MS: Final = 2**32 - 1

_FORMAT_VERSION: Final = 1
#: version, flags, transactions, frauds, overflow, base_ms, watermark_ms (little-endian).
_HEADER: Final = struct.Struct("<BBIIIqq")
_HAS_WATERMARK: Final = 1
#: Layout bits (`EntityState.layout`): the columns a state keeps, once a spec adopted it.
KEEPS_AMOUNTS: Final = 2
KEEPS_PEERS: Final = 4
KEEPS_FRAUDS: Final = 8
LAYOUT_SET: Final = 16
KEEPS_REPORT_TIMES: Final = 32
#: Ids of the newest transactions (`EntityState.tx_ids`). Not one of the `_COLUMNS`: a
#: state written before it was kept lacks only the ids of its past transactions, so its
#: history stays (a retry of those is not recognised, nothing else changes).
KEEPS_TX_IDS: Final = 64
#: Fraud times are written as epoch milliseconds (8 bytes), not as offsets from the base
#: (4 bytes, states written before reports stopped moving the clock). Always set on write.
ABSOLUTE_FRAUD_TIMES: Final = 128
_COLUMNS: Final = KEEPS_AMOUNTS | KEEPS_PEERS | KEEPS_FRAUDS | KEEPS_REPORT_TIMES
_LAYOUT: Final = _COLUMNS | LAYOUT_SET | KEEPS_TX_IDS
#: Count of `EntityState.tx_ids`, after the other columns when the state keeps them.
_ID_COUNT: Final = struct.Struct("<I")
_BIG_ENDIAN: Final = sys.byteorder == "big"
#: Peer fingerprints remembered per entity kind (a few MB at most).
_FINGERPRINT_MEMO: Final = 65_536

#: Bytes per transaction for each column, and per fraud report.
TIME_BYTES: Final = 4
AMOUNT_BYTES: Final = 8
PEER_BYTES: Final = 4
FRAUD_BYTES: Final = 8 + 8
#: The same, in states written with fraud times as 4-byte offsets.
OFFSET_FRAUD_BYTES: Final = 4 + 8
REPORT_TIME_BYTES: Final = 8
TX_ID_BYTES: Final = 8

if (
    array("I").itemsize != TIME_BYTES or array("Q").itemsize != 8 or array("q").itemsize != 8
):  # pragma: no cover
    raise ImportError("features.online needs 32-bit array('I') and 64-bit array('Q')")


class EventTooOldError(ValueError):
    """A transaction is later than its entity's allowed lateness and cannot be exact.

    Attributes:
        entity: The entity whose state refused it.
        lateness_ms: How far behind the entity's watermark the event is.
        allowed_ms: The allowed lateness.
    """

    def __init__(self, entity: Entity, lateness_ms: int, allowed_ms: int) -> None:
        super().__init__(
            f"event is {lateness_ms} ms behind the {entity.value}'s newest event; "
            f"at most {allowed_ms} ms is allowed"
        )
        self.entity = entity
        self.lateness_ms = lateness_ms
        self.allowed_ms = allowed_ms


class DuplicateTransactionError(ValueError):
    """The state already holds a transaction with this id; nothing was changed.

    Attributes:
        identical: Whether the stored transaction has the same time, amount and peer (a
            delivery repeated by a producer or a replay), or not (the id was reused).
    """

    def __init__(self, entity: Entity, tx_id: str, identical: bool) -> None:
        what = "the same transaction again" if identical else "with other content"
        super().__init__(f"{entity.value} already has transaction {tx_id!r:.80}: {what}")
        self.identical = identical


class StateLayoutError(ValueError):
    """A state was written under a feature set that kept fewer columns than this one needs.

    Its features cannot be exact: the history of the missing column was never recorded.
    The writer (`EntityWindows.record`, `update_into`) restarts such a state's history; a
    reader either refuses it or, leniently, reads what the state holds.
    """


class EntityState:
    """Everything the online engine remembers about one customer or one terminal.

    Mutated only by `EntityWindows`. Serialised with `to_bytes` (a 30-byte header and the
    raw little-endian arrays; no pickle) for the tables.

    Attributes:
        base_ms: Epoch milliseconds that the offsets below count from.
        watermark_ms: Newest event time seen; None for a state that has seen nothing.
        times: Transaction times as offsets from ``base_ms``, ascending.
        amounts: Their amounts, when the entity's features need them (else empty).
        peers: Their peer fingerprints, when needed (else empty).
        fraud_times: Transaction times of reported frauds, epoch milliseconds, ascending.
        fraud_ids: Fingerprints of those transactions' ids, aligned with ``fraud_times``.
        fraud_reported: When each fraud was reported (epoch milliseconds, aligned with
            ``fraud_times``), when the entity's features need it (else empty). Absolute,
            not an offset: a report may come long after the base moved.
        tx_ids: Fingerprints of the ids (`features.aggregations.report_fingerprint`) of
            the newest transactions, aligned with the tail of ``times``
            (``times[len(times) - len(tx_ids):]``), for entities that dedupe; it covers
            at least every transaction within the allowed lateness of the watermark.
        overflow: Events dropped because the state was full, or because a new feature
            set needed a column this state never kept (0 in a healthy system).
        layout: Which columns the state keeps (``KEEPS_*`` bits, with ``LAYOUT_SET``
            once an `EntityWindows` adopted it; 0 for a new state).
    """

    __slots__ = (
        "amounts",
        "base_ms",
        "fraud_ids",
        "fraud_reported",
        "fraud_times",
        "layout",
        "overflow",
        "peers",
        "times",
        "tx_ids",
        "watermark_ms",
    )

    def __init__(self) -> None:
        self.base_ms = 0
        self.watermark_ms: int | None = None
        self.times: array[int] = array("I")
        self.amounts: array[float] = array("d")
        self.peers: array[int] = array("I")
        self.fraud_times: array[int] = array("q")
        self.fraud_ids: array[int] = array("Q")
        self.fraud_reported: array[int] = array("q")
        self.tx_ids: array[int] = array("Q")
        self.overflow = 0
        self.layout = 0

    def __len__(self) -> int:
        return len(self.times)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntityState):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return (
            f"EntityState(transactions={len(self.times)}, frauds={len(self.fraud_times)}, "
            f"watermark_ms={self.watermark_ms}, overflow={self.overflow})"
        )

    def event_times(self) -> list[int]:
        """Transaction times in epoch milliseconds (for inspection and tests)."""
        return [self.base_ms + offset for offset in self.times]

    def to_bytes(self) -> bytes:
        """The compact, versioned byte form stored in the tables.

        Raises:
            ValueError: The columns the layout names are not aligned with ``times``.
        """
        n = len(self.times)
        layout = self.layout & _LAYOUT
        flags = layout | ABSOLUTE_FRAUD_TIMES | (0 if self.watermark_ms is None else _HAS_WATERMARK)
        if len(self.amounts) != (n if layout & KEEPS_AMOUNTS else 0) or len(self.peers) != (
            n if layout & KEEPS_PEERS else 0
        ):
            raise ValueError(f"inconsistent state: {self!r}")
        if len(self.fraud_reported) != (
            len(self.fraud_times) if layout & KEEPS_REPORT_TIMES else 0
        ) or len(self.tx_ids) > (n if layout & KEEPS_TX_IDS else 0):
            raise ValueError(f"inconsistent state: {self!r}")
        header = _HEADER.pack(
            _FORMAT_VERSION,
            flags,
            n,
            len(self.fraud_times),
            self.overflow,
            self.base_ms,
            self.watermark_ms or 0,
        )
        parts = [header, _little(self.times)]
        if layout & KEEPS_AMOUNTS:
            parts.append(_little(self.amounts))
        if layout & KEEPS_PEERS:
            parts.append(_little(self.peers))
        parts += [_little(self.fraud_times), _little(self.fraud_ids)]
        if layout & KEEPS_REPORT_TIMES:
            parts.append(_little(self.fraud_reported))
        if layout & KEEPS_TX_IDS:
            parts += [_ID_COUNT.pack(len(self.tx_ids)), _little(self.tx_ids)]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> EntityState:
        """Decode `to_bytes` output.

        Args:
            data: The bytes.

        Returns:
            The state.

        Raises:
            ValueError: The bytes are not a state of a known format version.
        """
        if len(data) < _HEADER.size:
            raise ValueError(f"state too short: {len(data)} bytes")
        version, flags, n, m, overflow, base_ms, watermark_ms = _HEADER.unpack_from(data)
        if version != _FORMAT_VERSION:
            raise ValueError(f"unknown state format version {version}")
        absolute = flags & ABSOLUTE_FRAUD_TIMES
        expected = (
            _HEADER.size
            + n * TIME_BYTES
            + (n * AMOUNT_BYTES if flags & KEEPS_AMOUNTS else 0)
            + (n * PEER_BYTES if flags & KEEPS_PEERS else 0)
            + m * (FRAUD_BYTES if absolute else OFFSET_FRAUD_BYTES)
            + (m * REPORT_TIME_BYTES if flags & KEEPS_REPORT_TIMES else 0)
        )
        ids = 0
        if flags & KEEPS_TX_IDS:
            if len(data) < expected + _ID_COUNT.size:
                raise ValueError(f"state has {len(data)} bytes, too short for its id count")
            (ids,) = _ID_COUNT.unpack_from(data, expected)
            if ids > n:
                raise ValueError(f"state has {ids} transaction ids for {n} transactions")
            expected += _ID_COUNT.size + ids * TX_ID_BYTES
        if len(data) != expected:
            raise ValueError(f"state has {len(data)} bytes, its header says {expected}")
        view = memoryview(data)
        state = cls()
        state.base_ms = base_ms
        state.watermark_ms = watermark_ms if flags & _HAS_WATERMARK else None
        state.overflow = overflow
        state.layout = flags & _LAYOUT
        at = _HEADER.size
        at = _load(state.times, view, at, n)
        if flags & KEEPS_AMOUNTS:
            at = _load(state.amounts, view, at, n)
        if flags & KEEPS_PEERS:
            at = _load(state.peers, view, at, n)
        if absolute:
            at = _load(state.fraud_times, view, at, m)
        else:
            offsets: array[int] = array("I")
            at = _load(offsets, view, at, m)
            state.fraud_times = array("q", [base_ms + offset for offset in offsets])
        at = _load(state.fraud_ids, view, at, m)
        if flags & KEEPS_REPORT_TIMES:
            at = _load(state.fraud_reported, view, at, m)
        if flags & KEEPS_TX_IDS:
            _load(state.tx_ids, view, at + _ID_COUNT.size, ids)
        return state


def _align_ids(state: EntityState) -> None:
    """After the oldest transactions were dropped: ids cover at most every transaction."""
    excess = len(state.tx_ids) - len(state.times)
    if excess > 0:
        del state.tx_ids[:excess]


def _little(values: array[int] | array[float]) -> bytes:
    if not _BIG_ENDIAN:
        return values.tobytes()
    swapped = array(values.typecode, values)  # pragma: no cover - big-endian hosts only
    swapped.byteswap()  # pragma: no cover
    return swapped.tobytes()  # pragma: no cover


def _load(target: array[int] | array[float], view: memoryview, at: int, count: int) -> int:
    end = at + count * target.itemsize
    target.frombytes(view[at:end])
    if _BIG_ENDIAN:  # pragma: no cover - big-endian hosts only
        target.byteswap()
    return end


#: An online aggregation bound to its instance: called once per window per transaction.
_Reader = Callable[[OnlineWindow], float]


class EntityWindows:
    """The online computation of one entity's features, compiled from the spec.

    Values are written into a caller's vector at the features' positions in the feature
    set, so a full vector is assembled without copies (`OnlineFeatures.new_vector`).
    One instance reuses a scratch window between calls: share it between coroutines of
    one thread (as Faust agents do), not between threads.

    Attributes:
        entity: The entity.
        retention_ms: Event time kept behind the watermark.
        allowed_lateness_ms: How late a transaction may be and still be applied.
        max_events: Bound on transactions per state.
        max_frauds: Bound on reports per state.
        keeps_amounts: Whether states keep amounts.
        keeps_peers: Whether states keep peer fingerprints.
        keeps_frauds: Whether states keep fraud reports.
        keeps_report_times: Whether states keep when each fraud was reported.
        keeps_tx_ids: Whether states keep their newest transactions' ids (dedupe).
        layout: The `EntityState.layout` of states these windows keep.
    """

    def __init__(self, features: FeatureSet, entity: Entity) -> None:
        policy = features.policies[entity]
        self.entity = entity
        self.retention_ms = features.retention_ms(entity)
        self.allowed_lateness_ms = policy.allowed_lateness_ms
        self.max_events = policy.max_events
        self.max_frauds = policy.max_frauds
        outputs: dict[tuple[int, int], list[tuple[int, WindowAggregation]]] = {}
        required: set[StateColumn] = set()
        for position, feature in enumerate(features):
            if feature.entity is not entity:
                continue
            assert isinstance(feature.aggregation, WindowAggregation)  # Feature checks it
            required |= feature.aggregation.requires
            window = (feature.window_ms, feature.delay_ms)
            outputs.setdefault(window, []).append((position, feature.aggregation))
        # One (length, delay, reads transactions?, sums amounts?, ((position,
        # aggregation.online), ...)) per distinct window, plain tuples: the hot loop
        # unpacks them, no attribute lookups. Windows read by transaction-free aggregations
        # only (known-fraud counts) come last: they need no search of the transactions.
        self._windows: tuple[tuple[int, int, bool, bool, tuple[tuple[int, _Reader], ...]], ...]
        self._windows = tuple(
            sorted(
                (
                    (
                        length,
                        delay,
                        any(agg.reads_transactions for _, agg in out),
                        any(StateColumn.AMOUNT in agg.requires for _, agg in out),
                        tuple((position, agg.online) for position, agg in out),
                    )
                    for (length, delay), out in outputs.items()
                ),
                key=lambda window: not window[2],
            )
        )
        self._window = OnlineWindow(0)  # reused for every window of every read
        self._fingerprints: dict[str, int] = {}
        self.keeps_amounts = StateColumn.AMOUNT in required
        self.keeps_peers = StateColumn.PEER in required
        self.keeps_frauds = StateColumn.FRAUD in required
        self.keeps_report_times = StateColumn.REPORTED in required
        self.keeps_tx_ids = policy.dedupe
        if self.keeps_report_times and not self.keeps_frauds:
            raise ValueError(f"{entity.value}: report times need the FRAUD column too")
        self.layout = (
            LAYOUT_SET
            | (KEEPS_AMOUNTS if self.keeps_amounts else 0)
            | (KEEPS_PEERS if self.keeps_peers else 0)
            | (KEEPS_FRAUDS if self.keeps_frauds else 0)
            | (KEEPS_REPORT_TIMES if self.keeps_report_times else 0)
            | (KEEPS_TX_IDS if self.keeps_tx_ids else 0)
        )

    @property
    def max_state_bytes(self) -> int:
        """Upper bound of ``len(state.to_bytes())`` for this entity: the bound in bytes."""
        per_event = (
            TIME_BYTES
            + (AMOUNT_BYTES if self.keeps_amounts else 0)
            + (PEER_BYTES if self.keeps_peers else 0)
            + (TX_ID_BYTES if self.keeps_tx_ids else 0)
        )
        per_fraud = FRAUD_BYTES + (REPORT_TIME_BYTES if self.keeps_report_times else 0)
        frauds = self.max_frauds * per_fraud if self.keeps_frauds else 0
        ids = _ID_COUNT.size if self.keeps_tx_ids else 0
        return _HEADER.size + self.max_events * per_event + frauds + ids

    def check(self, state: EntityState, time_ms: int) -> None:
        """Refuse a transaction that is later than the allowed lateness.

        Args:
            state: The entity's state.
            time_ms: The transaction's time.

        Raises:
            EventTooOldError: It is too late to be applied exactly.
        """
        watermark = state.watermark_ms
        if watermark is not None and watermark - time_ms > self.allowed_lateness_ms:
            raise EventTooOldError(self.entity, watermark - time_ms, self.allowed_lateness_ms)

    def update_into(
        self,
        state: EntityState,
        time_ms: int,
        amount: float,
        peer_id: str,
        out: list[float],
        tx_id: str | None = None,
    ) -> None:
        """Apply a transaction to its entity's state and write the entity's features.

        The scoring agent's call for the customer: the windows include the transaction.

        Args:
            state: The entity's state, changed in place.
            time_ms: Transaction time, epoch milliseconds.
            amount: Transaction amount.
            peer_id: The other party (the terminal, for a customer).
            out: The feature vector to write into.
            tx_id: The transaction's id, for entities that dedupe (None: not checked,
                not remembered).

        Raises:
            EventTooOldError: The transaction is too late; nothing was changed.
            DuplicateTransactionError: The state holds a transaction with this id;
                nothing was changed.
        """
        watermark = state.watermark_ms
        if watermark is not None and watermark - time_ms > self.allowed_lateness_ms:
            raise EventTooOldError(self.entity, watermark - time_ms, self.allowed_lateness_ms)
        fingerprint = self.check_duplicate(state, tx_id, time_ms, amount, peer_id)
        self.update_checked(state, time_ms, amount, peer_id, out, fingerprint)

    def check_duplicate(
        self, state: EntityState, tx_id: str | None, time_ms: int, amount: float, peer_id: str
    ) -> int | None:
        """Refuse a transaction whose id the state holds; return the id's fingerprint.

        Returns:
            The fingerprint to remember the id by, or None when this entity does not
            dedupe or no id is given.

        Raises:
            DuplicateTransactionError: The id is among the state's newest transactions.
        """
        if tx_id is None or not self.keeps_tx_ids:
            return None
        fingerprint = report_fingerprint(tx_id)
        ids = state.tx_ids
        if fingerprint in ids:
            at = len(state.times) - len(ids) + ids.index(fingerprint)
            identical = (
                state.times[at] == time_ms - state.base_ms
                and (not self.keeps_amounts or state.amounts[at] == amount)
                and (not self.keeps_peers or state.peers[at] == self._fingerprint(peer_id))
            )
            raise DuplicateTransactionError(self.entity, tx_id, identical)
        return fingerprint

    def read_into(
        self,
        state: EntityState,
        time_ms: int,
        amount: float,
        out: list[float],
        *,
        refuse_late: bool = True,
    ) -> None:
        """Write the entity's features for a transaction at ``time_ms`` without recording it.

        The scoring agent's call for the terminal, whose state the terminal agent owns.
        Windows with delay 0 then hold the recorded transactions at or before ``time_ms``.

        Args:
            state: The entity's state (not changed).
            time_ms: Transaction time, epoch milliseconds.
            amount: Transaction amount.
            out: The feature vector to write into.
            refuse_late: Raise when the read cannot be exact: too far behind the state, or a
                state written under a feature set that did not keep a column these
                features need. With False the features are computed anyway from what the
                state holds (a missing column reads as empty: lower bounds of the exact
                values): the scorer prefers a slightly low terminal count to not scoring a
                transaction at all.

        Raises:
            EventTooOldError: The read is too far behind the state to be exact (only with
                ``refuse_late``).
            StateLayoutError: The state lacks a column (only with ``refuse_late``).
        """
        watermark = state.watermark_ms
        if refuse_late:
            if watermark is not None and watermark - time_ms > self.allowed_lateness_ms:
                raise EventTooOldError(self.entity, watermark - time_ms, self.allowed_lateness_ms)
            if (
                state.layout != self.layout
                and state.layout
                and self.layout & ~state.layout & _COLUMNS
            ):
                raise StateLayoutError(
                    f"{self.entity.value} state keeps columns {state.layout:#x}, these "
                    f"features need {self.layout:#x}: it was written under another feature set"
                )
        self._read(state, time_ms, amount, -1, out)

    def record(self, state: EntityState, time_ms: int, amount: float, peer_id: str) -> None:
        """Apply a transaction to its entity's state without reading features.

        The terminal agent's call. It reads nothing, so lateness does not limit it: a
        transaction is stored as long as it is inside the retention (newer than the
        watermark minus the retention), where every later read that can see it finds it.
        Terminal agents merge transactions from all customer partitions, whose event
        times drift apart by days while a worker catches up on a backlog; refusing by
        the allowed lateness would drop those transactions for good.

        Args:
            state: The entity's state, changed in place.
            time_ms: Transaction time, epoch milliseconds.
            amount: Transaction amount.
            peer_id: The other party (the customer, for a terminal).

        Raises:
            EventTooOldError: The transaction is older than the retention; nothing was
                changed.
        """
        watermark = state.watermark_ms
        if watermark is not None and watermark - time_ms >= self.retention_ms:
            raise EventTooOldError(self.entity, watermark - time_ms, self.retention_ms - 1)
        if state.layout != self.layout:
            self._conform(state)
        self._insert(state, time_ms, amount, peer_id)
        self._bound(state)

    def record_fraud(
        self, state: EntityState, tx_time_ms: int, tx_id: str, reported_at_ms: int
    ) -> bool:
        """Apply a fraud report: the fraud counts by its transaction's time.

        Args:
            state: The entity's state, changed in place.
            tx_time_ms: The reported transaction's time.
            tx_id: The reported transaction's id (to ignore duplicates).
            reported_at_ms: When it was reported (kept when a feature needs it). A
                duplicate keeps the earliest report time, whatever the arrival order.

        Returns:
            Whether the state changed: False when the entity keeps no frauds, for a
            duplicate that reports nothing earlier, and for a transaction older than the
            retention (no exact read can need it any more). The entity's clock (its
            newest transaction) never moves.
        """
        if not self.keeps_frauds:
            return False
        if state.layout != self.layout:
            self._conform(state)
        watermark = state.watermark_ms
        if watermark is not None and tx_time_ms <= watermark - self.retention_ms:
            return False
        fingerprint = report_fingerprint(tx_id)
        times, ids = state.fraud_times, state.fraud_ids
        # Equal times are kept in fingerprint order, so the arrival order of reports
        # leaves no trace in the state.
        at = bisect_left(times, tx_time_ms)
        while at < len(times) and times[at] == tx_time_ms and ids[at] <= fingerprint:
            if ids[at] == fingerprint:
                reported = state.fraud_reported
                if self.keeps_report_times and reported_at_ms < reported[at]:
                    reported[at] = reported_at_ms
                    return True
                return False
            at += 1
        times.insert(at, tx_time_ms)
        ids.insert(at, fingerprint)
        if self.keeps_report_times:
            state.fraud_reported.insert(at, reported_at_ms)
        excess = len(times) - self.max_frauds
        if excess > 0:
            del times[:excess]
            del ids[:excess]
            if self.keeps_report_times:
                del state.fraud_reported[:excess]
            state.overflow += excess
        return True

    def is_expired(self, state: EntityState, now_ms: int) -> bool:
        """Whether the state can be deleted at stream event time ``now_ms``.

        True when the entity's newest event (transaction or reported fraud) is at least
        the retention old: nothing of it is in any window of a transaction at ``now_ms``
        minus the allowed lateness or later.
        """
        newest = state.watermark_ms
        frauds = state.fraud_times
        if frauds and (newest is None or frauds[-1] > newest):
            newest = frauds[-1]
        return newest is None or newest <= now_ms - self.retention_ms

    # --- internals: the hot path -------------------------------------------------------

    def _conform(self, state: EntityState) -> None:
        """Adopt a new state, or one written under a feature set with other columns.

        Columns no longer needed are dropped. If a needed column was never kept (a feature
        was added that needs amounts, peers, frauds or report times this state did not record), the
        state's history cannot give exact features: its transactions are forgotten and
        counted in ``overflow``, and it is exact again one retention later. (Replaying the
        retention rebuilds it exactly at once.)
        """
        missing = self.layout & ~state.layout & _COLUMNS
        if state.layout and missing:
            state.overflow += len(state.times) + len(state.fraud_times)
            for column in (state.times, state.amounts, state.peers, state.tx_ids):
                del column[:]
            del state.fraud_times[:]
            del state.fraud_ids[:]
            del state.fraud_reported[:]
        if not self.keeps_amounts:
            del state.amounts[:]
        if not self.keeps_peers:
            del state.peers[:]
        if not self.keeps_frauds:
            del state.fraud_times[:]
            del state.fraud_ids[:]
        if not self.keeps_report_times:
            del state.fraud_reported[:]
        if not self.keeps_tx_ids:
            del state.tx_ids[:]
        state.layout = self.layout

    def _start(self, state: EntityState, time_ms: int) -> None:
        """First transaction of a state: the base leaves room for any that can follow.

        Reports recorded before it that are already out of its retention are dropped, as
        they would have been had they arrived after it.
        """
        state.base_ms = time_ms - self.retention_ms
        state.watermark_ms = time_ms
        frauds = state.fraud_times
        if frauds and frauds[0] <= state.base_ms:
            self._drop_through(state, 0)

    def _advance(self, state: EntityState, time_ms: int) -> None:
        """Move the watermark forward, drop what fell out of retention, keep offsets small."""
        threshold = time_ms - self.retention_ms
        if time_ms - state.base_ms > MAX_OFFSET_MS:
            self._drop_through(state, threshold - state.base_ms)
            shift = threshold - state.base_ms
            state.times = array("I", [t - shift for t in state.times])
            state.base_ms = threshold
        else:
            self._drop_through(state, threshold - state.base_ms)
        state.watermark_ms = time_ms

    def _drop_through(self, state: EntityState, offset: int) -> None:
        """Forget transactions and reports at or before ``offset``."""
        times = state.times
        if times and times[0] <= offset:
            k = bisect_right(times, offset)
            del times[:k]
            if self.keeps_amounts:
                del state.amounts[:k]
            if self.keeps_peers:
                del state.peers[:k]
            _align_ids(state)
        frauds = state.fraud_times
        through = state.base_ms + offset
        if frauds and frauds[0] <= through:
            k = bisect_right(frauds, through)
            del frauds[:k]
            del state.fraud_ids[:k]
            if self.keeps_report_times:
                del state.fraud_reported[:k]

    def _insert(self, state: EntityState, time_ms: int, amount: float, peer_id: str) -> int:
        """Store a transaction (already checked for lateness); return its index."""
        watermark = state.watermark_ms
        if watermark is None:
            self._start(state, time_ms)
            watermark = time_ms
        elif time_ms > watermark:
            if time_ms - state.base_ms > MAX_OFFSET_MS:
                self._advance(state, time_ms)
            else:  # _advance without the calls, on the hot path
                threshold = time_ms - self.retention_ms - state.base_ms
                times, frauds = state.times, state.fraud_times
                if (times and times[0] <= threshold) or (
                    frauds and frauds[0] <= threshold + state.base_ms
                ):
                    self._drop_through(state, threshold)
                state.watermark_ms = time_ms
        offset = time_ms - state.base_ms
        times = state.times
        if time_ms >= watermark:
            position = len(times)
            times.append(offset)
            if self.keeps_amounts:
                state.amounts.append(amount)
            if self.keeps_peers:
                state.peers.append(self._fingerprint(peer_id))
        else:
            position = bisect_right(times, offset)
            times.insert(position, offset)
            if self.keeps_amounts:
                state.amounts.insert(position, amount)
            if self.keeps_peers:
                state.peers.insert(position, self._fingerprint(peer_id))
        return position

    def _fingerprint(self, peer_id: str) -> int:
        """`peer_fingerprint`, memoised: a customer's terminals recur, and CRC-32 is not free.

        The memo is cleared when it reaches `_FINGERPRINT_MEMO` ids, so it stays bounded.
        """
        memo = self._fingerprints
        fingerprint = memo.get(peer_id)
        if fingerprint is None:
            if len(memo) >= _FINGERPRINT_MEMO:
                memo.clear()
            fingerprint = memo[peer_id] = peer_fingerprint(peer_id)
        return fingerprint

    def update_checked(
        self,
        state: EntityState,
        time_ms: int,
        amount: float,
        peer_id: str,
        out: list[float],
        fingerprint: int | None = None,
    ) -> None:
        """`update_into` for a caller that checked the lateness and the id itself.

        ``fingerprint`` is what `check_duplicate` returned (None: no id to keep).
        Nothing is checked again.
        """
        if state.layout != self.layout:
            self._conform(state)
        position = self._insert(state, time_ms, amount, peer_id)
        self._read(state, time_ms, amount, position, out)
        if fingerprint is not None:
            self._remember_id(state, position, fingerprint)
        if len(state.times) > self.max_events:
            self._bound(state)

    def _remember_id(self, state: EntityState, position: int, fingerprint: int) -> None:
        """Keep the id of the transaction just inserted; forget ids beyond the lateness.

        Only transactions within the allowed lateness of the watermark can be applied,
        so only their ids can meet a duplicate that is not refused as too late anyway.
        A transaction inserted before the covered tail (possible only in a state written
        before ids were kept) is not remembered.
        """
        ids = state.tx_ids
        times = state.times
        untracked = len(times) - 1 - len(ids)  # before the covered tail, this one aside
        if position < untracked:
            return
        ids.insert(position - untracked, fingerprint)
        assert state.watermark_ms is not None  # a transaction was just inserted
        horizon = state.watermark_ms - self.allowed_lateness_ms - state.base_ms
        first = len(times) - len(ids)
        if times[first] < horizon:
            del ids[: bisect_left(times, horizon) - first]

    def _bound(self, state: EntityState) -> None:
        """Enforce ``max_events``, oldest first."""
        excess = len(state.times) - self.max_events
        if excess > 0:
            del state.times[:excess]
            if self.keeps_amounts:
                del state.amounts[:excess]
            if self.keeps_peers:
                del state.peers[:excess]
            _align_ids(state)
            state.overflow += excess

    def _read(
        self, state: EntityState, time_ms: int, amount: float, position: int, out: list[float]
    ) -> None:
        """Compute every window of the entity for a transaction at ``time_ms``.

        ``position`` is the transaction's index in the state when it was just inserted
        (windows with delay 0 then end at it, ties included in arrival order), -1 when
        reading without recording.
        """
        times = state.times
        base = state.base_ms
        w = self._window
        w.times = times
        w.amounts = state.amounts
        w.peers = state.peers
        w.fraud_times = state.fraud_times
        w.fraud_reported = state.fraud_reported
        w.base_ms = base
        w.read_ms = time_ms
        w.amount = amount
        amounts = state.amounts
        hi = 0
        searched_end: int | None = None  # the end whose `hi` was last searched for
        for length, delay, ranged, sums, readers in self._windows:
            end = time_ms - delay - base
            if not ranged:
                w.start = end - length
                w.end = end
                w.length_ms = length
                for out_position, read in readers:
                    out[out_position] = read(w)
                continue
            if not delay and position >= 0:
                hi = position + 1
                searched_end = None
            elif end != searched_end:  # windows sharing a delay share their new end
                hi = bisect_right(times, end)
                searched_end = end
            start = end - length
            w.lo = lo = bisect_right(times, start, 0, hi)
            w.hi = hi
            w.start = start
            w.end = end
            w.length_ms = length
            if sums:
                w.amount_total = sum(amounts[lo:hi])
            for out_position, read in readers:
                out[out_position] = read(w)


class OnlineFeatures:
    """The online computation of a whole feature set: transaction, customer, terminal.

    Attributes:
        features: The feature set.
        names: Feature names, in vector order.
        entities: The compiled windows of each windowed entity.
    """

    def __init__(self, features: FeatureSet = DEFAULT_FEATURES) -> None:
        self.features = features
        self.names = features.names
        self._attributes: tuple[tuple[int, TransactionAttribute], ...] = tuple(
            (position, feature.aggregation)
            for position, feature in enumerate(features)
            if isinstance(feature.aggregation, TransactionAttribute)
        )
        self.entities = {e: EntityWindows(features, e) for e in features.windowed_entities}

    def new_vector(self) -> list[float]:
        """A zeroed feature vector to fill."""
        return [0.0] * len(self.names)

    def transaction_into(self, time_ms: int, amount: float, out: list[float]) -> None:
        """Write the features of the transaction alone (amount, weekend, night)."""
        for position, attribute in self._attributes:
            out[position] = attribute.online(time_ms, amount)


class _EntityTable(NamedTuple):
    windows: EntityWindows
    states: dict[str, EntityState]
    by_customer: bool


class OnlineEngine:
    """Online features for a whole stream in one process: states in dictionaries.

    The agents split this across Kafka partitions and tables; this class is the same
    computation in one place, for the parity test, benchmarks and notebooks.

    Attributes:
        online: The compiled feature set.
        states: State per entity kind, then per entity key.
    """

    def __init__(self, features: FeatureSet = DEFAULT_FEATURES) -> None:
        self.online = OnlineFeatures(features)
        self.states: dict[Entity, dict[str, EntityState]] = {
            entity: {} for entity in self.online.entities
        }
        self._tables = tuple(
            _EntityTable(windows, self.states[entity], entity is Entity.CUSTOMER)
            for entity, windows in self.online.entities.items()
        )

    def transaction(
        self,
        time_ms: int,
        customer_id: str,
        terminal_id: str,
        amount: float,
        tx_id: str | None = None,
    ) -> list[float]:
        """Apply a transaction to its customer and terminal and return its feature vector.

        Args:
            time_ms: Transaction time, epoch milliseconds.
            customer_id: The customer.
            terminal_id: The terminal.
            amount: The amount.
            tx_id: The transaction's id (None: duplicates are not looked for).

        Returns:
            The features, in the feature set's order.

        Raises:
            EventTooOldError: Too late for one of its entities; no state was changed.
            DuplicateTransactionError: An entity that dedupes holds this id; no state
                was changed.
        """
        out = self.online.new_vector()
        self.online.transaction_into(time_ms, amount, out)
        fingerprints: list[int | None] = []
        for windows, states, by_customer in self._tables:
            key, peer = (customer_id, terminal_id) if by_customer else (terminal_id, customer_id)
            state = states.get(key)
            fingerprint = None
            if state is not None:
                windows.check(state, time_ms)
                fingerprint = windows.check_duplicate(state, tx_id, time_ms, amount, peer)
            elif tx_id is not None and windows.keeps_tx_ids:
                fingerprint = report_fingerprint(tx_id)
            fingerprints.append(fingerprint)
        for (windows, states, by_customer), fingerprint in zip(
            self._tables, fingerprints, strict=True
        ):
            key, peer = (customer_id, terminal_id) if by_customer else (terminal_id, customer_id)
            state = states.get(key)
            if state is None:
                state = states[key] = EntityState()
            windows.update_checked(state, time_ms, amount, peer, out, fingerprint)  # checked above
        return out

    def fraud_report(
        self,
        tx_id: str,
        tx_time_ms: int,
        customer_id: str,
        terminal_id: str,
        reported_at_ms: int,
    ) -> bool:
        """Apply a fraud report to the entities that keep frauds.

        Returns:
            Whether any state stored it.
        """
        stored = False
        for windows, states, by_customer in self._tables:
            if not windows.keeps_frauds:
                continue
            key = customer_id if by_customer else terminal_id
            state = states.get(key)
            if state is None:
                state = states[key] = EntityState()
            stored = windows.record_fraud(state, tx_time_ms, tx_id, reported_at_ms) or stored
        return stored

    def expire(self, now_ms: int) -> int:
        """Delete the states of entities gone quiet by stream event time ``now_ms``.

        Returns:
            How many states were deleted.
        """
        deleted = 0
        for windows, states, _ in self._tables:
            quiet = [key for key, state in states.items() if windows.is_expired(state, now_ms)]
            for key in quiet:
                del states[key]
            deleted += len(quiet)
        return deleted


class StreamEvent(NamedTuple):
    """One event of a replayed stream, in processing order.

    Attributes:
        time_ms: Event time: the transaction's time, or the report's time.
        is_transaction: False for a fraud report.
        tx_id: The transaction (reported one, for a report).
        tx_time_ms: The transaction's time.
        customer_id: Its customer.
        terminal_id: Its terminal.
        amount: Its amount (0 for a report).
    """

    time_ms: int
    is_transaction: bool
    tx_id: str
    tx_time_ms: int
    customer_id: str
    terminal_id: str
    amount: float


def stream_events(transactions: pl.DataFrame) -> Iterator[StreamEvent]:
    """The transactions and fraud reports of a dataset as one stream in event-time order.

    The order the parity contract assumes: by event time; at equal times reports before
    transactions, and transactions by ``tx_id``. A fraud without ``reported_at`` has no
    report.

    Args:
        transactions: A dataset with the columns of `features.dataset`.

    Yields:
        The events, in order.
    """
    columns = transactions.columns
    event = {
        "tx_id": pl.col(dataset.TX_ID),
        "tx_time_ms": pl.col(dataset.TX_TIME).dt.epoch("ms"),
        "customer_id": pl.col(dataset.CUSTOMER_ID),
        "terminal_id": pl.col(dataset.TERMINAL_ID),
    }
    parts = [
        transactions.select(
            time_ms=pl.col(dataset.TX_TIME).dt.epoch("ms"),
            is_transaction=pl.lit(True),
            amount=pl.col(dataset.AMOUNT).cast(pl.Float64),
            **event,
        )
    ]
    if dataset.REPORTED_AT in columns:
        fraud = pl.col(dataset.IS_FRAUD).fill_null(False) if dataset.IS_FRAUD in columns else True
        reported = transactions.filter(pl.col(dataset.REPORTED_AT).is_not_null() & fraud)
        parts.append(
            reported.select(
                time_ms=pl.col(dataset.REPORTED_AT).dt.epoch("ms"),
                is_transaction=pl.lit(False),
                amount=pl.lit(0.0),
                **event,
            )
        )
    columns = list(StreamEvent._fields)
    events = pl.concat([p.select(columns) for p in parts]).sort(
        ["time_ms", "is_transaction", "tx_id"],
        maintain_order=True,  # rows of one id: as given
    )
    for row in events.iter_rows():
        yield StreamEvent(*row)
