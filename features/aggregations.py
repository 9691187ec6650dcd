"""Aggregations: the math of each feature, once for the offline and once for the online engine.

Each aggregation is a small class with two pure methods, in the spirit of quix-streams'
window aggregations: ``online`` reads one window of one entity's state (plain arrays) and
returns a float; ``offline`` reads the same window for every row of a sorted dataset
(numpy arrays) and returns a column. The two live side by side so that a reader compares
them line by line, and the parity test holds them to the same numbers.

A window of an entity's history is given to both as a half-open index range ``[lo, hi)``
over its transactions sorted by time (online: arrival order among equal times; offline:
``(tx_time, tx_id)`` order), plus its time bounds ``(start, end]`` for aggregations that
look at events by time (fraud reports are counted by their transaction's time).

A new aggregation: subclass `WindowAggregation`, name the state columns it needs in
``requires``, write both methods, show its online value on a small window in an example
(the examples run as tests), and use it in a `features.spec.Feature`. The engines need
no change; the parity tests then hold the two methods to each other (and the slow
reference in tests/unit/features/feature_reference.py needs its definition too).

The examples build an `OnlineWindow` by hand, as the online engine fills one from an
entity's state: ``lo`` and ``hi`` (which transactions are in the window) and ``start`` and
``end`` (its time bounds) follow from the transaction's time and the feature's window and
delay (`features.spec`); here they are simply set.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import zlib
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt
import polars as pl

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
_THURSDAY: Final = 3  # 1970-01-01 was a Thursday; Monday is 0, as in pandas' weekday()

#: The default `FraudRisk.known_delay`; the spec names it `features.spec.KNOWN_FRAUD_DELAY`
#: and says why an hour (defined here because the spec imports this module).
KNOWN_FRAUD_DELAY: Final = timedelta(hours=1)


def peer_fingerprint(peer_id: str) -> int:
    """The 32-bit fingerprint under which an entity's state remembers a peer.

    A state keeps 4 bytes per transaction for its peer instead of the id string (up to 64
    characters). Distinct counts are of fingerprints: two peers of one customer collide
    with probability about k**2 / 2**33 for k peers (3e-7 for 50 terminals), and both
    engines count the same fingerprints, so parity is exact regardless.

    Args:
        peer_id: The id of the peer (the terminal of a customer's transaction).

    Returns:
        CRC-32 of the UTF-8 id, stable across processes and versions (unlike ``hash``).
    """
    return zlib.crc32(peer_id.encode())


def report_fingerprint(tx_id: str) -> int:
    """The 64-bit fingerprint under which a state remembers a reported transaction.

    Used only to ignore a report delivered twice; 64 bits make a false duplicate among
    reports with the same transaction time practically impossible.

    Args:
        tx_id: The id of the reported transaction.

    Returns:
        The first 8 bytes of BLAKE2b of the UTF-8 id, as an unsigned integer.
    """
    digest = hashlib.blake2b(tx_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class StateColumn(enum.Enum):
    """A per-transaction column an online state keeps only when an aggregation needs it."""

    AMOUNT = "amount"
    PEER = "peer"
    FRAUD = "fraud"
    REPORTED = "reported"  # when each fraud was reported (with FRAUD)


# --- transaction attributes -------------------------------------------------------------


class TransactionAttribute(abc.ABC):
    """A feature of the transaction alone: no window, no state."""

    @abc.abstractmethod
    def online(self, tx_time_ms: int, amount: float) -> float:
        """The value for one transaction.

        Args:
            tx_time_ms: Event time, epoch milliseconds UTC.
            amount: The amount.

        Returns:
            The feature value.
        """

    @abc.abstractmethod
    def offline(self, time_ms: pl.Expr, amount: pl.Expr) -> pl.Expr:
        """The value for every row, as a polars expression.

        Args:
            time_ms: Event time as epoch milliseconds (Int64).
            amount: The amount (Float64).

        Returns:
            An expression for the feature.
        """


@dataclass(frozen=True)
class Amount(TransactionAttribute):
    """The amount itself.

    Examples:
        >>> Amount().online(tx_time_ms=1_522_540_800_000, amount=57.16)
        57.16
    """

    def online(self, tx_time_ms: int, amount: float) -> float:  # noqa: D102
        return amount

    def offline(self, time_ms: pl.Expr, amount: pl.Expr) -> pl.Expr:  # noqa: D102
        return amount


@dataclass(frozen=True)
class DuringWeekend(TransactionAttribute):
    """1 on Saturday and Sunday, UTC (the handbook's ``weekday() >= 5``).

    Both engines use the same integer arithmetic on epoch milliseconds (floor division, so
    times before 1970 work too) rather than two calendar libraries.

    Examples:
        >>> sunday = 1_522_540_800_000  # 2018-04-01T00:00:00Z
        >>> DuringWeekend().online(sunday, 10.0), DuringWeekend().online(sunday + DAY_MS, 10.0)
        (1.0, 0.0)
    """

    def online(self, tx_time_ms: int, amount: float) -> float:  # noqa: D102
        return 1.0 if (tx_time_ms // DAY_MS + _THURSDAY) % 7 >= 5 else 0.0

    def offline(self, time_ms: pl.Expr, amount: pl.Expr) -> pl.Expr:  # noqa: D102
        return (((time_ms // DAY_MS + _THURSDAY) % 7) >= 5).cast(pl.Int8)


@dataclass(frozen=True)
class DuringNight(TransactionAttribute):
    """1 when the UTC hour is at most 6 (00:00 to 06:59:59.999), as in the handbook.

    Examples:
        >>> midnight = 1_522_540_800_000  # 2018-04-01T00:00:00Z
        >>> DuringNight().online(midnight + 7 * HOUR_MS - 1, 10.0)  # 06:59:59.999
        1.0
        >>> DuringNight().online(midnight + 7 * HOUR_MS, 10.0)  # 07:00
        0.0
    """

    def online(self, tx_time_ms: int, amount: float) -> float:  # noqa: D102
        return 1.0 if tx_time_ms % DAY_MS < 7 * HOUR_MS else 0.0

    def offline(self, time_ms: pl.Expr, amount: pl.Expr) -> pl.Expr:  # noqa: D102
        return ((time_ms % DAY_MS) < 7 * HOUR_MS).cast(pl.Int8)


# --- windows ----------------------------------------------------------------------------


class OnlineWindow:
    """One window of one entity's online state, as the online engine hands it over.

    The engine keeps one instance per entity kind and overwrites its fields for each
    window of each transaction in turn: no allocation per event on the hot path. Transaction
    times and window bounds are offsets in milliseconds from the state's base; fraud and
    report times are epoch milliseconds. Aggregations only read it.

    Attributes:
        times: Transaction times of the entity, ascending.
        amounts: Their amounts (empty unless an aggregation requires AMOUNT).
        peers: Their peer fingerprints (empty unless PEER is required).
        fraud_times: Transaction times of reported frauds, ascending (FRAUD), epoch
            milliseconds (not offsets: a report may arrive far ahead of the entity's
            transactions).
        fraud_reported: When each of those frauds was reported, epoch milliseconds,
            aligned with ``fraud_times`` (empty unless REPORTED is required).
        base_ms: Epoch milliseconds the offsets count from.
        read_ms: The time of the read (the transaction's), epoch milliseconds.
        lo: First index in the window.
        hi: One past the last index in the window.
        start: Exclusive old end of the window, as an offset.
        end: Inclusive new end of the window, as an offset.
        amount: The current transaction's amount.
        length_ms: The window's length.
        amount_total: Sum of the window's amounts, left to right (kept only when an
            aggregation of the window requires AMOUNT; computed once for all of them).
    """

    __slots__ = (
        "amount",
        "amount_total",
        "amounts",
        "base_ms",
        "end",
        "fraud_reported",
        "fraud_times",
        "hi",
        "length_ms",
        "lo",
        "peers",
        "read_ms",
        "start",
        "times",
    )

    def __init__(self, length_ms: int) -> None:
        self.times: array[int] = array("I")
        self.amounts: array[float] = array("d")
        self.peers: array[int] = array("I")
        self.fraud_times: array[int] = array("q")
        self.fraud_reported: array[int] = array("q")
        self.base_ms = 0
        self.read_ms = 0
        self.lo = 0
        self.hi = 0
        self.start = 0
        self.end = 0
        self.amount = 0.0
        self.length_ms = length_ms
        self.amount_total = 0.0


@dataclass(frozen=True, eq=False)
class OfflineHistory:
    """Every transaction of every entity of one kind, sorted by (entity, tx_time, tx_id).

    Attributes:
        key: Sort key ``segment * span + (time - origin)``: ascending, and entities never
            overlap, so one ``searchsorted`` finds window edges for every row at once.
        segment: Entity number of each row (0, 1, ... in sort order).
        time_ms: Transaction time, epoch milliseconds.
        amount: Amount.
        peer: Peer fingerprint (`peer_fingerprint`), as int64.
        is_fraud: Whether the transaction is a fraud.
        known_ms: When its fraud became known (report time; the transaction time for a
            fraud without a report time, i.e. known when it enters any delayed window).
    """

    key: Ints
    segment: Ints
    time_ms: Ints
    amount: Floats
    peer: Ints
    is_fraud: npt.NDArray[np.bool_]
    known_ms: Ints

    @cached_property
    def amount_through(self) -> Floats:
        """Per-entity running sum of amounts, this row included.

        Restarted for each entity, so a window sum is the difference of two sums no
        larger than that entity's total: rounding stays near 1e-16 of the total.
        """
        frame = pl.DataFrame({"amount": self.amount, "segment": self.segment})
        through = frame.select(pl.col("amount").cum_sum().over("segment")).to_series()
        return through.to_numpy()

    @cached_property
    def amount_before(self) -> Floats:
        """Per-entity running sum of amounts, this row excluded."""
        return self.amount_through - self.amount


@dataclass(frozen=True, eq=False)
class OfflineWindow:
    """One (window, delay) of every row of an `OfflineHistory`.

    Attributes:
        history: The sorted transactions.
        lo: First index of each row's window.
        hi: One past its last index.
        length_ms: Window length.
        delay_ms: Window delay.
    """

    history: OfflineHistory
    lo: Ints
    hi: Ints
    length_ms: int
    delay_ms: int

    @cached_property
    def count(self) -> Ints:
        """Transactions in each row's window."""
        return self.hi - self.lo

    @cached_property
    def amount_sum(self) -> Floats:
        """Sum of amounts in each row's window (0 when empty)."""
        h = self.history
        n = len(h.key)
        if n == 0:
            return np.zeros(0)
        last = np.clip(self.hi - 1, 0, n - 1)
        first = np.clip(self.lo, 0, n - 1)
        sums = h.amount_through[last] - h.amount_before[first]
        return np.where(self.count > 0, sums, 0.0)

    @cached_property
    def amount_mean(self) -> Floats:
        """Mean amount in each row's window (0 when empty)."""
        count = self.count
        return np.where(count > 0, self.amount_sum / np.maximum(count, 1), 0.0)


class WindowAggregation(abc.ABC):
    """A feature of an entity's transactions in a window of time."""

    #: The state columns the online engine must keep for this aggregation.
    requires: ClassVar[frozenset[StateColumn]] = frozenset()
    #: Whether ``online`` reads the window's transactions (``lo``, ``hi``, ``amount_total``);
    #: when no aggregation of a window does, the engine does not search for them.
    reads_transactions: ClassVar[bool] = True

    @abc.abstractmethod
    def online(self, w: OnlineWindow) -> float:
        """The value for one transaction from its entity's state."""

    @abc.abstractmethod
    def offline(self, w: OfflineWindow) -> Floats:
        """The values for every row of a sorted history, aligned with it."""


@dataclass(frozen=True)
class Count(WindowAggregation):
    """Number of transactions in the window.

    Examples:
        A customer's transactions at 0 s, 60 s and 90 s, the window holding the last two:

        >>> w = OnlineWindow(length_ms=DAY_MS)
        >>> w.times = array("I", [0, 60_000, 90_000])
        >>> w.lo, w.hi = 1, 3
        >>> Count().online(w)
        2.0
    """

    def online(self, w: OnlineWindow) -> float:  # noqa: D102
        return float(w.hi - w.lo)

    def offline(self, w: OfflineWindow) -> Floats:  # noqa: D102
        return w.count.astype(np.float64)


@dataclass(frozen=True)
class MeanAmount(WindowAggregation):
    """Mean amount of the transactions in the window; 0 when the window is empty.

    Examples:
        >>> w = OnlineWindow(length_ms=DAY_MS)
        >>> w.amounts = array("d", [10.0, 20.0, 60.0])
        >>> w.lo, w.hi = 1, 3
        >>> w.amount_total = sum(w.amounts[w.lo : w.hi])  # kept by the engine
        >>> MeanAmount().online(w)
        40.0
        >>> w.lo = w.hi = 3  # an empty window
        >>> MeanAmount().online(w)
        0.0
    """

    requires: ClassVar = frozenset({StateColumn.AMOUNT})

    def online(self, w: OnlineWindow) -> float:  # noqa: D102
        count = w.hi - w.lo
        return w.amount_total / count if count else 0.0

    def offline(self, w: OfflineWindow) -> Floats:  # noqa: D102
        return w.amount_mean


@dataclass(frozen=True)
class AmountToMean(WindowAggregation):
    """The current amount divided by the window's mean amount; 1 when the mean is not > 0.

    With a window that includes the current transaction the mean always exists; 1 then
    only stands for a history of zero amounts, and means "as usual".

    Examples:
        The current transaction (90) is the window's last:

        >>> w = OnlineWindow(length_ms=7 * DAY_MS)
        >>> w.amounts = array("d", [10.0, 20.0, 90.0])
        >>> w.lo, w.hi, w.amount = 0, 3, 90.0
        >>> w.amount_total = sum(w.amounts)
        >>> AmountToMean().online(w)  # 90 / mean(10, 20, 90)
        2.25
    """

    requires: ClassVar = frozenset({StateColumn.AMOUNT})

    def online(self, w: OnlineWindow) -> float:  # noqa: D102
        count = w.hi - w.lo
        mean = w.amount_total / count if count else 0.0
        return w.amount / mean if mean > 0.0 else 1.0

    def offline(self, w: OfflineWindow) -> Floats:  # noqa: D102
        mean = w.amount_mean
        positive = mean > 0.0
        return np.where(positive, w.history.amount / np.where(positive, mean, 1.0), 1.0)


@dataclass(frozen=True)
class SecondsSincePrevious(WindowAggregation):
    """Seconds between the two latest transactions in the window; the window length if < 2.

    With delay 0 the latest is the current transaction, so this is the time since the
    entity's previous transaction, capped at the window (a bounded state cannot know
    more, and the cap makes "never" and "long ago" the same large value).

    Examples:
        >>> w = OnlineWindow(length_ms=30 * DAY_MS)
        >>> w.times = array("I", [0, 60_000, 90_000])
        >>> w.lo, w.hi = 0, 3
        >>> SecondsSincePrevious().online(w)
        30.0
        >>> w.lo = 2  # the current transaction alone: the window's length, in seconds
        >>> SecondsSincePrevious().online(w)
        2592000.0
    """

    def online(self, w: OnlineWindow) -> float:  # noqa: D102
        hi = w.hi
        if hi - w.lo >= 2:
            return (w.times[hi - 1] - w.times[hi - 2]) / 1000
        return w.length_ms / 1000

    def offline(self, w: OfflineWindow) -> Floats:  # noqa: D102
        t = w.history.time_ms
        n = len(t)
        if n == 0:
            return np.zeros(0)
        last = np.clip(w.hi - 1, 0, n - 1)
        before = np.clip(w.hi - 2, 0, n - 1)
        gap = (t[last] - t[before]) / 1000
        return np.where(w.count >= 2, gap, w.length_ms / 1000)


@dataclass(frozen=True)
class DistinctPeers(WindowAggregation):
    """Number of distinct peers (a customer's terminals) in the window.

    Examples:
        >>> w = OnlineWindow(length_ms=DAY_MS)
        >>> w.peers = array("I", [peer_fingerprint(t) for t in ("T1", "T2", "T1", "T3")])
        >>> w.lo, w.hi = 1, 4
        >>> DistinctPeers().online(w)  # T2, T1, T3
        3.0
    """

    requires: ClassVar = frozenset({StateColumn.PEER})

    def online(self, w: OnlineWindow) -> float:  # noqa: D102
        return float(len(set(w.peers[w.lo : w.hi])))

    def offline(self, w: OfflineWindow) -> Floats:
        """Count, for each row i, the rows j that are the last of their peer in its window.

        With ``nxt_j`` the next row of the same entity and peer, j counts for i exactly
        when ``lo_i <= j < hi_i <= nxt_j``. ``lo`` and ``hi`` never decrease with i, so
        those i form one interval, found by binary search; a difference array adds up the
        intervals. O(n log n), no per-row Python.
        """
        h = w.history
        n = len(h.key)
        rows = np.arange(n, dtype=np.int64)
        group = (h.segment << 32) | h.peer
        order = np.argsort(group, kind="stable")
        grouped = group[order]
        same = grouped[1:] == grouped[:-1]
        nxt = np.full(n, n, dtype=np.int64)
        nxt[order[:-1][same]] = order[1:][same]
        first = np.searchsorted(w.hi, rows, side="right")
        stop = np.minimum(
            np.searchsorted(w.lo, rows, side="right"),
            np.searchsorted(w.hi, nxt, side="right"),
        )
        return _interval_counts(first, stop, n)


@dataclass(frozen=True)
class FraudRisk(WindowAggregation):
    """Frauds / transactions in the window (0 when there are none), the handbook's risk.

    A fraud counts by its transaction's time: it is in the window when its transaction
    time is in ``(start, end]``, and it counts for a read at time t when it was reported
    at or before ``t - known_delay`` (``reported_at <= t - known_delay``, at millisecond
    resolution, in both engines), as the known-fraud counts do with their delay. Terminal
    features thus read only reports at least an hour old (the default delay), so a
    worker can wait until the terminal agents have applied them without waiting on the
    live report stream. Online the report times are kept with the frauds, so a report
    that reaches the state before it is old enough (a backlog consumed faster than the
    transactions) does not count early: the value depends on event times only, not on
    the order in which reports and transactions arrive. With the handbook's 7-day delay
    and every report at most 7 days minus ``known_delay`` after its transaction, every
    fraud in the window counts, so this equals the handbook's risk from labels. A later
    report counts from ``known_delay`` after its time on.

    Attributes:
        known_delay: How old a report must be at the read to count: a whole number of
            milliseconds, not negative. Zero counts reports up to the read's own time.

    Examples:
        A terminal's four transactions at hours 1 to 4, all in the window ``(0 h, 4 h]``;
        those of hours 2 and 3 were frauds, reported at hours 5 and 10. Read at hour 7,
        an hour-old report is known only for the first:

        >>> w = OnlineWindow(length_ms=4 * HOUR_MS)
        >>> w.times = array("I", [1 * HOUR_MS, 2 * HOUR_MS, 3 * HOUR_MS, 4 * HOUR_MS])
        >>> w.lo, w.hi, w.start, w.end = 0, 4, 0, 4 * HOUR_MS
        >>> w.fraud_times = array("q", [2 * HOUR_MS, 3 * HOUR_MS])
        >>> w.fraud_reported = array("q", [5 * HOUR_MS, 10 * HOUR_MS])
        >>> w.read_ms = 7 * HOUR_MS
        >>> FraudRisk(known_delay=timedelta(hours=1)).online(w)  # 1 known fraud / 4
        0.25
        >>> w.read_ms = 11 * HOUR_MS
        >>> FraudRisk(known_delay=timedelta(hours=1)).online(w)
        0.5
    """

    known_delay: timedelta = KNOWN_FRAUD_DELAY

    requires: ClassVar = frozenset({StateColumn.FRAUD, StateColumn.REPORTED})

    def __post_init__(self) -> None:
        self.known_delay_ms  # noqa: B018 - validates the delay

    @cached_property
    def known_delay_ms(self) -> int:
        """The known delay in whole milliseconds.

        Raises:
            ValueError: The delay is negative or not a whole number of milliseconds.
        """
        delay = self.known_delay
        micros = (delay.days * 86_400 + delay.seconds) * 1_000_000 + delay.microseconds
        if micros < 0 or micros % 1000:
            raise ValueError(
                f"FraudRisk.known_delay must be whole milliseconds, not negative: {delay}"
            )
        return micros // 1000

    def online(self, w: OnlineWindow) -> float:  # noqa: D102
        count = w.hi - w.lo
        frauds = w.fraud_times
        if not count or not frauds:
            return 0.0
        base = w.base_ms
        lo = bisect_right(frauds, w.start + base)
        hi = bisect_right(frauds, w.end + base)
        reported = w.fraud_reported
        if len(reported) != len(frauds):  # a state from before report times were kept
            return (hi - lo) / count
        known_by = w.read_ms - self.known_delay_ms
        return sum(1 for i in range(lo, hi) if reported[i] <= known_by) / count

    def offline(self, w: OfflineWindow) -> Floats:
        """Add each fraud to the rows that see it, as intervals of a difference array.

        Fraud f is in row i's window when ``key_f + delay <= key_i < key_f + delay +
        length`` (same entity, since keys of entities never overlap) and is known when
        ``time_i - known_delay >= known_f``; each bound is one ``searchsorted``.
        """
        h = w.history
        n = len(h.key)
        fraud = np.flatnonzero(h.is_fraud)
        key_f = h.key[fraud]
        first = np.searchsorted(h.key, key_f + w.delay_ms, side="left")
        known_key = key_f - h.time_ms[fraud] + h.known_ms[fraud] + self.known_delay_ms
        known = np.searchsorted(h.key, known_key, side="left")
        stop = np.searchsorted(h.key, key_f + w.delay_ms + w.length_ms, side="left")
        frauds = _interval_counts(np.maximum(first, known), stop, n)
        count = w.count
        return np.where(count > 0, frauds / np.maximum(count, 1), 0.0)


@dataclass(frozen=True)
class KnownFrauds(WindowAggregation):
    """Frauds in the window that had been reported by the window's end.

    Fraud f counts for a transaction at t when its transaction time is in the window
    ``(t - d - n, t - d]`` and it was reported at or before ``t - d``. Like `FraudRisk`
    (whose ``known_delay`` is this d in the spec, `features.spec.KNOWN_FRAUD_DELAY`) this
    looks only at reports at least the delay old: the terminal agents have applied and
    committed them long before any read needs them (with d an hour, while they run less
    than an hour of event time behind the scorers), so the value a worker reads does not
    depend on when a report happened to be processed. No share of the window's
    transactions: a count needs no transaction of the window, and a compromised
    terminal's count is telling on its own.

    Examples:
        Frauds at hours 2 and 3 in the window ``(0 h, 4 h]``, reported at 03:30 and at
        hour 10: only the first had been reported by the window's end.

        >>> w = OnlineWindow(length_ms=4 * HOUR_MS)
        >>> w.start, w.end = 0, 4 * HOUR_MS
        >>> w.fraud_times = array("q", [2 * HOUR_MS, 3 * HOUR_MS])
        >>> w.fraud_reported = array("q", [3 * HOUR_MS + HOUR_MS // 2, 10 * HOUR_MS])
        >>> KnownFrauds().online(w)
        1.0
    """

    requires: ClassVar = frozenset({StateColumn.FRAUD, StateColumn.REPORTED})
    reads_transactions: ClassVar = False

    def online(self, w: OnlineWindow) -> float:  # noqa: D102
        frauds = w.fraud_times
        reported = w.fraud_reported
        if len(reported) != len(frauds):  # a state from before report times were kept
            return 0.0
        if not frauds:
            return 0.0
        base = w.base_ms
        lo = bisect_right(frauds, w.start + base)
        hi = bisect_right(frauds, w.end + base)
        known_by = w.end + base
        return float(sum(1 for i in range(lo, hi) if reported[i] <= known_by))

    def offline(self, w: OfflineWindow) -> Floats:
        """Add each fraud to the rows that see it, as intervals of a difference array.

        As in `FraudRisk`, but a fraud becomes visible only once ``time_i - delay`` has
        reached its report time.
        """
        h = w.history
        n = len(h.key)
        fraud = np.flatnonzero(h.is_fraud)
        key_f = h.key[fraud]
        first = np.searchsorted(h.key, key_f + w.delay_ms, side="left")
        known_key = key_f - h.time_ms[fraud] + h.known_ms[fraud] + w.delay_ms
        known = np.searchsorted(h.key, known_key, side="left")
        stop = np.searchsorted(h.key, key_f + w.delay_ms + w.length_ms, side="left")
        return _interval_counts(np.maximum(first, known), stop, n)


def _interval_counts(first: Ints, stop: Ints, n: int) -> Floats:
    """For each of n rows, how many of the intervals ``[first_k, stop_k)`` contain it."""
    keep = stop > first
    delta = np.bincount(first[keep], minlength=n + 1) - np.bincount(stop[keep], minlength=n + 1)
    return np.cumsum(delta[:n]).astype(np.float64)
