"""Event-time watermarks of the terminal table, and the scorer's wait on them.

The scorer reads terminal state that other agents write, often on other workers: on a
backlog it runs far ahead of them in event time, and a read of a terminal feature that
is not final yet gives a number the offline engine would not (the issue behind "exact
at any pace"). Watermarks, as Flink and Kafka Streams have them, make the reads exact:

**What a terminal partition publishes.** With its states, in the same batch write (the
store flushes a partition's entries in one atomic script), terminal partition p keeps

- per source (transaction) partition s, in the replay-mark entry that already holds the
  highest source offset applied (`streams.pipeline.terminals.mark_key`): the source's
  watermark W(s) as the scorer of s last declared it, or *idle*;
- a report entry (`report_key`): the newest ``reported_at`` applied (reports are
  applied in their partition's order; the product's producers send them in report-time
  order), and the offset of its reports partition up to which everything is applied.

**Where source watermarks come from.** The scorer of source partition s declares, on
every forward message and on a tick every `TICK_S` to every terminal partition
(`SourceClock`), W(s) = the newest transaction time it has scored on s minus the
customer's allowed lateness: a transaction of s older than that would be refused as too
late for its customer, so every forward of s at or before W(s) has been sent. A source
whose partition stays read to its end for `IDLE_AFTER_S` declares itself idle: it holds
nothing back.

**What the scorer needs.** A transaction at t reads, on its terminal's partition p,
transactions up to ``t - forwards_lag`` (the 7-day delay of the terminal windows) and
reports up to ``t - reports_lag`` (the hour after which the known-fraud counts and the
risk count a report). They are final when every non-idle source's W(s) on p is at least
``t - forwards_lag`` and the report entry's time is at least ``t - reports_lag``, or p
has applied its reports partition up to the end it had once every report the read
needs had been sent (`ReportEnds`: for a live transaction, reports an hour old were
sent long ago; for a replayed one, before the transaction itself). That end is read
from the broker, one request for all partitions, only when the newest applied report is
too old (reports are sparse) and no earlier reading covers the transaction: a reading
made once a replayed transaction had been received covers every transaction that reads
no report newer than it, and each takes the oldest reading that covers it.

**Holding** (`WatermarkGate`, ``streams.pipeline.score``): the scorer scores, per source
partition, the prefix of its transactions whose reads are final and holds the rest in
memory, in order, across batches: the agent goes on taking its other partitions'
batches, whose forwards are what moves the watermarks, so no partition held back holds
back another (one agent reads all of a worker's partitions in one stream; waiting inside
a batch deadlocked a worker whose partitions were days apart). Held transactions are
scored as soon as a batch or the release task (woken by this worker's terminal batches,
and every `RECHECK_S`) finds them final. The
scorer declares how far its held sources are, so a source that has sent nothing yet
(every source, when workers start on a backlog) holds nobody back. A transaction held
``max_wait_s`` (a terminal partition nobody applies) is scored with what is there, its
read counted in ``fraudstream_terminal_reads_inexact_total`` and logged. Held
transactions are dropped at a rebalance: every partition is then read again from the
offsets stored with its state (``streams.tablestore.resume``), which never pass a held
transaction.

Idle handling is what keeps this from deadlocking: a source with nothing to score holds
no reader back, and sparse reports are covered by their partition's end. A source that
receives events again declares its watermark on its next forward; until those are
applied, reads that needed them may be inexact (as in Flink, idleness is declared, not
proven; with a week of slack for transactions, it takes a source idle for days).
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from features.aggregations import FraudRisk, KnownFrauds
from features.spec import Entity, FeatureSet

if TYPE_CHECKING:
    from streams.tablestore.partition_store import PeekableStore

logger = logging.getLogger(__name__)

#: A source watermark declaring the source idle (in forward messages and mark entries).
IDLE: Final = -1
#: Seconds between two watermark ticks of a scorer to every terminal partition.
TICK_S: Final = 1.0
#: Prefix of the report-watermark key of a terminal partition (``#`` is not in any id).
_REPORT_PREFIX: Final = b"#reports:"
#: A transaction produced within this of its event time is live (`ReportMark.covers`).
LIVE_WITHIN_MS: Final = 30 * 60_000
#: Longest a live fraud report takes from its ``reported_at`` to the broker.
REPORT_DELIVERY_MS: Final = 5 * 60_000
#: Readings of the reports partitions' ends kept for later transactions (`ReportEnds`).
READINGS_KEPT: Final = 64
#: Batches received before one reading at most, noted one by one (`ReportEnds.received`).
ARRIVALS_KEPT: Final = 256
#: Seconds between two readings of the watermarks while transactions are held.
RECHECK_S: Final = 0.05


def report_key(partition: int) -> bytes:
    """The terminal-table key of a terminal partition's report watermark."""
    return _REPORT_PREFIX + str(partition).encode()


# --- entry values ----------------------------------------------------------------------


@dataclass(frozen=True)
class SourceMark:
    """A terminal partition's record of one source partition.

    Attributes:
        offset: Highest source offset applied (-1: none yet).
        watermark: The source's declared watermark, `IDLE`, or None (never declared:
            a mark written before watermarks existed).
    """

    offset: int
    watermark: int | None = None

    def to_bytes(self) -> bytes:
        """``b"offset"`` or ``b"offset watermark"`` (the first is the older format)."""
        if self.watermark is None:
            return str(self.offset).encode()
        return f"{self.offset} {self.watermark}".encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> SourceMark:
        """Read a mark entry (absent: nothing applied, nothing declared)."""
        if raw is None:
            return cls(-1)
        offset, _, watermark = raw.partition(b" ")
        return cls(int(offset), int(watermark) if watermark else None)

    def declared(self, watermark: int) -> SourceMark:
        """The mark after the source declares ``watermark`` (or `IDLE`).

        Declarations only move forward, except that an idle source that becomes
        active again declares where it is now.
        """
        old = self.watermark
        if watermark == IDLE or old is None or old == IDLE or watermark > old:
            return SourceMark(self.offset, watermark)
        return self


@dataclass(frozen=True)
class ReportMark:
    """A terminal partition's progress in its fraud reports.

    Attributes:
        reported_at: The newest ``reported_at`` applied (-1: none).
        applied_to: The offset of the reports partition after the last report applied
            (the next to apply; 0: none).
    """

    reported_at: int = -1
    applied_to: int = 0

    def to_bytes(self) -> bytes:
        """``b"<reported_at> <applied_to>"``."""
        return f"{self.reported_at} {self.applied_to}".encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> ReportMark:
        """Read a report entry (absent: nothing applied)."""
        if raw is None:
            return cls()
        reported_at, _, applied_to = raw.partition(b" ")
        return cls(int(reported_at), int(applied_to or 0))

    def advanced(self, reported_at: int, applied_to: int) -> ReportMark:
        """The entry after applying reports up to ``applied_to``, the newest at ``reported_at``."""
        newest = max(self.reported_at, reported_at)
        following = max(self.applied_to, applied_to)
        if newest == self.reported_at and following == self.applied_to:
            return self
        return ReportMark(newest, following)

    def covers(self, time_ms: int, lag_ms: int, reports_end: int | None) -> bool:
        """Whether every report a read at ``time_ms`` needs (to ``time_ms - lag_ms``) is applied.

        Either a report that late is applied (reports are applied in their partition's
        order), or everything the partition held when the transaction was known to be
        sent is (``reports_end``, its end offset then: `ReportEnds`).
        """
        if self.reported_at >= time_ms - lag_ms:
            return True
        return reports_end is not None and self.applied_to >= reports_end


# --- what reads need ---------------------------------------------------------------------


@dataclass(frozen=True)
class TerminalNeeds:
    """How far behind a read at t its terminal's inputs must be applied.

    Attributes:
        forwards_lag_ms: Transactions up to ``t - forwards_lag_ms`` (None: no terminal
            feature reads transactions).
        reports_lag_ms: Reports up to ``t - reports_lag_ms`` (None: none reads reports).
    """

    forwards_lag_ms: int | None
    reports_lag_ms: int | None

    @classmethod
    def of(cls, features: FeatureSet) -> TerminalNeeds:
        """The needs of a feature set's terminal features (see the module docstring).

        A window with delay d over transactions needs them up to t - d; a known-fraud
        count with delay d needs reports up to t - d; the risk needs both, reports up
        to t minus its known delay.

        Forwards are asked for up to t - min(d, half the terminal's allowed lateness)
        all the same: that keeps every scorer within half that lateness (plus a card's)
        of the slowest source partition, so the terminal states it moves ahead stay
        within the lateness of the slowest one's later reads, even after a crash makes
        it read again from its stored offsets (a worker SIGKILLed during a catch-up:
        with d alone the survivors ran six days ahead and the partitions they took over
        read states more than the week of lateness past them).
        """
        policy = features.policies.get(Entity.TERMINAL)
        forwards: list[int] = [] if policy is None else [policy.allowed_lateness_ms // 2]
        if forwards and not any(f.entity is Entity.TERMINAL for f in features):
            forwards = []
        reports: list[int] = []
        for feature in features:
            if feature.entity is not Entity.TERMINAL:
                continue
            aggregation = feature.aggregation
            if isinstance(aggregation, KnownFrauds):
                reports.append(feature.delay_ms)
                continue
            forwards.append(feature.delay_ms)
            if isinstance(aggregation, FraudRisk):
                known: timedelta = getattr(aggregation, "known_delay", timedelta(0))
                reports.append(int(known.total_seconds() * 1000))
        return cls(min(forwards, default=None), min(reports, default=None))


@dataclass(frozen=True)
class PartitionWatermarks:
    """What one terminal partition has applied, as read by a scorer.

    Attributes:
        forwards: The lowest watermark of its non-idle sources (None: a source has
            declared nothing yet); every source idle reads as no bound at all.
        reports: The report entry.
    """

    forwards: int | None
    reports: ReportMark

    def covers(self, time_ms: int, needs: TerminalNeeds, reports_end: int | None = None) -> bool:
        """Whether a read at ``time_ms`` of this partition's terminals is final.

        Args:
            time_ms: The transaction's time.
            needs: What the terminal features read.
            reports_end: The reports partition's end offset when the transaction was
                known to be sent, if read (`ReportMark.covers`).
        """
        lag = needs.forwards_lag_ms
        if lag is not None and (self.forwards is None or self.forwards < time_ms - lag):
            return False
        reports_lag = needs.reports_lag_ms
        return reports_lag is None or self.reports.covers(time_ms, reports_lag, reports_end)


#: Watermark of a partition whose every source is idle.
_UNBOUNDED: Final = 2**62


def partition_watermarks(
    marks: Sequence[bytes | None], report: bytes | None
) -> PartitionWatermarks:
    """Combine a terminal partition's mark entries (one per source) and report entry."""
    lowest: int | None = _UNBOUNDED
    for raw in marks:
        watermark = SourceMark.from_bytes(raw).watermark
        if watermark is None:
            lowest = None
            break
        if watermark != IDLE and watermark < lowest:  # type: ignore[operator]
            lowest = watermark
    return PartitionWatermarks(lowest, ReportMark.from_bytes(report))


class TerminalWatermarks:
    """Reads terminal partitions' watermarks, one round trip for many partitions.

    Args:
        store: The terminal table's store (read with ``peek``).
        sources: Partition count of the transactions topic (one mark per source).
        mark_key: The mark key of (terminal partition, source partition).
    """

    def __init__(
        self, store: PeekableStore, sources: int, mark_key: Callable[[int, int], bytes]
    ) -> None:
        self._store = store
        self._keys = {
            p: [*(mark_key(p, s) for s in range(sources)), report_key(p)] for p in range(sources)
        }
        self.known: dict[int, PartitionWatermarks] = {}

    def read(self, partitions: Iterable[int]) -> None:
        """Read the watermarks of ``partitions`` into `known`."""
        wanted = {p: self._keys[p] for p in partitions if p in self._keys}
        if not wanted:
            return
        found = self._store.peek(wanted)
        for partition, values in found.items():
            self.known[partition] = partition_watermarks(values[:-1], values[-1])

    def covers(
        self, partition: int, time_ms: int, needs: TerminalNeeds, reports_end: int | None = None
    ) -> bool:
        """Whether the last reading of ``partition`` makes a read at ``time_ms`` final."""
        known = self.known.get(partition)
        return known is not None and known.covers(time_ms, needs, reports_end)

    def reports_cover(self, partition: int, time_ms: int, needs: TerminalNeeds) -> bool:
        """Whether the last reading's newest report alone covers a read at ``time_ms``."""
        known = self.known.get(partition)
        lag = needs.reports_lag_ms
        return lag is None or (known is not None and known.reports.reported_at >= time_ms - lag)


# --- the scorer's side -------------------------------------------------------------------


#: Seconds a source partition stays read to its end before it is declared idle.
IDLE_AFTER_S: Final = 10.0


class IdleSources:
    """Which source partitions have been read to their end for `IDLE_AFTER_S`.

    Not at once, nor during or right after a Kafka outage: producers may still hold a
    source's events (why: ``streams.watermarktick``).

    Args:
        idle_after_s: How long a partition must stay at its end.
        in_outage: Whether Kafka is unreachable now (an outage restarts every wait).
    """

    def __init__(self, in_outage: Callable[[], bool], idle_after_s: float = IDLE_AFTER_S) -> None:
        self.idle_after_s = idle_after_s
        self._in_outage = in_outage
        self._at_end_since: dict[int, float] = {}

    def reset(self) -> None:
        """Forget every wait (a reading failed: Kafka may be down)."""
        self._at_end_since.clear()

    def observe(self, partition: int, at_end: bool, now: float | None = None) -> bool:
        """Note whether ``partition`` is at its end now; return whether it counts as idle."""
        now = time.monotonic() if now is None else now
        if self._in_outage():
            self._at_end_since.clear()
            return False
        if not at_end:
            self._at_end_since.pop(partition, None)
            return False
        since = self._at_end_since.setdefault(partition, now)
        return now - since >= self.idle_after_s


class SourceClock:
    """The watermarks a scorer declares for its source partitions.

    W(s) is the newest transaction time sent on s minus the customer's allowed
    lateness; while a batch's transactions of s wait (`hold`), no later than just
    before the earliest of them, since their forwards are not sent yet.

    Args:
        lateness_ms: The customer's allowed lateness: how far behind its newest the
            scorer of a partition still accepts a transaction.
    """

    def __init__(self, lateness_ms: int) -> None:
        self.lateness_ms = lateness_ms
        self._newest: dict[int, int] = {}
        self._held: dict[int, tuple[int, int]] = {}
        self._idle: set[int] = set()
        self._generation = 0
        self._sent_at: dict[int, int] = {}

    @property
    def generation(self) -> int:
        """A count of `saw` calls: `set_idle` ignores readings older than the last one."""
        return self._generation

    def saw(self, source: int, time_ms: int) -> None:
        """The forwards of a transaction of ``source`` at ``time_ms`` are queued."""
        self._generation += 1
        self._sent_at[source] = self._generation
        self._idle.discard(source)
        if time_ms > self._newest.get(source, -1):
            self._newest[source] = time_ms

    def hold(self, source: int, times: Iterable[int]) -> None:
        """Transactions of ``source`` at ``times`` wait, unsent: declare below them."""
        listed = list(times)
        self._held[source] = (min(listed), max(listed))
        self._idle.discard(source)

    def release(self) -> None:
        """No transaction waits any more (the batch is done)."""
        self._held.clear()

    def set_idle(self, source: int, idle: bool, generation: int | None = None) -> None:
        """Declare ``source`` read to its end (or not any more).

        Args:
            source: The source partition.
            idle: Whether its processed position was at its high watermark.
            generation: `generation` when that reading started: a source that has sent
                forwards since is not declared idle on it.
        """
        sent_since = generation is not None and self._sent_at.get(source, 0) > generation
        if idle and source not in self._held and not sent_since:
            self._idle.add(source)
        else:
            self._idle.discard(source)

    def forget(self, keep: Iterable[int]) -> None:
        """Drop the sources not in ``keep`` (revoked: their new owner declares them)."""
        kept = set(keep)
        self._newest = {s: t for s, t in self._newest.items() if s in kept}
        self._sent_at = {s: g for s, g in self._sent_at.items() if s in kept}
        self._idle &= kept

    def watermark(self, source: int) -> int | None:
        """The watermark ``source`` declares: `IDLE`, a time, or None (nothing seen)."""
        if source in self._idle:
            return IDLE
        newest = self._newest.get(source)
        held = self._held.get(source)
        if held is None:
            return None if newest is None else max(0, newest - self.lateness_ms)
        earliest, latest = held
        newest = latest if newest is None else max(newest, latest)
        return max(0, min(earliest - 1, newest - self.lateness_ms))

    def declarations_after(self, newest: Mapping[int, int]) -> dict[int, int]:
        """The watermarks ``newest``'s sources will declare once its transactions are sent."""
        out: dict[int, int] = {}
        for source, time_ms in newest.items():
            latest = max(time_ms, self._newest.get(source, -1))
            watermark = latest - self.lateness_ms
            held = self._held.get(source)
            if held is not None:
                watermark = min(watermark, held[0] - 1)
            out[source] = max(0, watermark)
        return out

    def declarations(self, sources: Iterable[int]) -> dict[int, int]:
        """The declared watermark of each of ``sources`` that has one."""
        out: dict[int, int] = {}
        for source in sources:
            watermark = self.watermark(source)
            if watermark is not None:
                out[source] = watermark
        return out


@dataclass(slots=True)
class Pending:
    """A transaction waiting on terminal watermarks: its source, time and terminal partition.

    Attributes:
        produced_ms: When it was produced, as well as the record says (None: unknown).
        received_ms: When this worker had it (epoch ms with its fraction, this worker's
            clock; None: unknown).
        reports_end: Its terminal's reports partition's end offset read after it was
            known to be sent (`ReportEnds`; None: not read, not needed yet).
    """

    source: int
    time_ms: int
    terminal_partition: int
    produced_ms: int | None = None
    received_ms: float | None = None
    reports_end: int | None = None


class ReportEnds:
    """The reports partitions' end offsets, read when a transaction's reads need them.

    A transaction at t reads reports up to t - ``lag_ms``. When its terminal partition's
    newest applied report is older than that (reports are sparse, or that partition has
    none), its reads are final once the partition has applied everything its reports
    partition held at a moment when every report it needs had been sent:

    - a live transaction (produced within `LIVE_WITHIN_MS` of its event time) reads
      live reports, sent by t - ``lag_ms`` + `REPORT_DELIVERY_MS`;
    - any other (a replay, a backlog produced late) comes after the reports before it in
      event time: they were in the log when this worker received it, or at the latest
      `REPORT_DELIVERY_MS` after it was produced. The first holds because a replay
      hands a transaction to its producer only once the reports before it are
      acknowledged (``streams.replay.sender``; reports sent in the same breath as the
      transaction, in another partition's batch, can reach the log after it).

    A reading also covers later transactions, of any partition: asked for once every
    report before a replayed transaction u had been sent (u noted by `received`), it
    holds every report before u's time, so it covers every transaction whose reads need
    no newer report. Each transaction takes the *oldest* reading that covers it: the
    reports in it were in the log longest, and its terminal agents have most likely
    applied them already. In a
    replay a thousand times faster than life, an hour of event time is milliseconds,
    and a transaction taking the newest reading waited for reports sent after the
    ones it reads (about one in two releases at 6,900 tx/s).

    One broker request reads every partition's end, only when no reading covers a
    transaction (live: one an hour).

    Args:
        read: Reads the end offset of every reports partition.
        lag_ms: How far behind t the reports a read needs are (`TerminalNeeds`).
        kept: Readings kept to choose from.
    """

    def __init__(
        self,
        read: Callable[[], Awaitable[Mapping[int, int]]],
        lag_ms: int,
        kept: int = READINGS_KEPT,
    ) -> None:
        self._read = read
        self.lag_ms = lag_ms
        self._kept = kept
        #: Readings, oldest first: when each was asked for, the newest report time it
        #: covers (both never decreasing), and its ends.
        self._asked_ms: list[float] = []
        self._covers_ms: list[int] = []
        self._ends: list[Mapping[int, int]] = []
        #: Transactions received and not yet counted in a reading, a batch an entry:
        #: (when every report before them had been sent, the newest report time that
        #: covers), each the largest of the batch.
        self._arrivals: list[tuple[float, int]] = []
        #: The newest report time covered by a reading asked for now.
        self._covered_ms = -(1 << 62)

    @staticmethod
    def live(pending: Pending) -> bool:
        """Whether ``pending`` was produced within `LIVE_WITHIN_MS` of its event time."""
        produced = pending.produced_ms
        return produced is not None and produced - pending.time_ms <= LIVE_WITHIN_MS

    def sent_by(self, pending: Pending) -> float:
        """When (wall clock, epoch ms) every report ``pending`` reads had been sent."""
        if self.live(pending):
            return pending.time_ms - self.lag_ms + REPORT_DELIVERY_MS
        return self._replayed_sent_by(pending)

    @staticmethod
    def _replayed_sent_by(pending: Pending) -> float:
        """`sent_by` of a transaction that is not live."""
        produced, received = pending.produced_ms, pending.received_ms
        if produced is None:
            return received if received is not None else time.time() * 1000
        delivered = produced + REPORT_DELIVERY_MS
        return delivered if received is None else min(received, delivered)

    def received(self, pending: Sequence[Pending]) -> None:
        """Note a batch of transactions, for the readings asked for after they were sent.

        Such a reading covers the reports before the newest of them. Only transactions
        that are not live count: a live one says when the live reports it reads were
        sent, which says nothing of a replay's.
        """
        live, sent_by = self.live, self._replayed_sent_by
        noted = [(sent_by(p), p.time_ms - 1) for p in pending if not live(p)]
        if not noted:
            return
        self._arrivals.append((max(n[0] for n in noted), max(n[1] for n in noted)))
        if len(self._arrivals) > ARRIVALS_KEPT:
            # No reading for a long while (none was needed): one entry for them all,
            # which counts once the last of them was sent.
            arrivals = self._arrivals
            self._arrivals = [(max(a[0] for a in arrivals), max(a[1] for a in arrivals))]

    def attach_known(self, pending: Pending) -> bool:
        """Give ``pending`` the end of the oldest reading that covers it; say if it did.

        A reading covers it when asked for after its own reports were sent, or after
        those of a transaction noted earlier whose reports include all it reads.
        """
        index = min(
            bisect_left(self._covers_ms, pending.time_ms - self.lag_ms),
            bisect_right(self._asked_ms, self.sent_by(pending)),
        )
        if index == len(self._ends):
            return False
        pending.reports_end = self._ends[index].get(pending.terminal_partition)
        return pending.reports_end is not None

    async def attach(self, pending: Sequence[Pending]) -> None:
        """Give each of ``pending`` its reports partition's end, reading it if needed."""
        if not pending:
            return
        if all([self.attach_known(p) for p in pending]):  # a list: every one attached
            return
        # A reading counts for the transactions whose reports were known to be in the
        # log before it was asked for (strictly: the clock is read to the microsecond).
        asked_ms = time.time() * 1000
        covered = self._covered_ms
        waiting = []
        for sent_by, covered_by in self._arrivals:
            if sent_by < asked_ms:
                covered = max(covered, covered_by)
            else:
                waiting.append((sent_by, covered_by))
        try:
            ends = await self._read()
        except Exception as exc:  # a broker outage: these wait for their reports
            logger.debug("reports partitions' ends not read: %r", exc)
            return
        self._arrivals = waiting
        self._covered_ms = covered
        if self._asked_ms and asked_ms < self._asked_ms[-1]:
            # The wall clock went back: the older readings cannot be ordered with it.
            self._asked_ms, self._covers_ms, self._ends = [], [], []
        self._asked_ms.append(asked_ms)
        self._covers_ms.append(covered)
        self._ends.append(ends)
        if len(self._ends) > self._kept:
            del self._asked_ms[0], self._covers_ms[0], self._ends[0]
        for p in pending:
            if p.reports_end is None:
                self.attach_known(p)


class WatermarkGate:
    """Decides which of a batch's transactions read final terminal state, and waits for the rest.

    Args:
        watermarks: The watermark reader.
        needs: What terminal reads need.
        max_wait_s: Longest wait for one batch before its rest is scored as is.
        observe_wait: Called with each wait's seconds (a histogram).
    """

    def __init__(
        self,
        watermarks: TerminalWatermarks,
        needs: TerminalNeeds,
        *,
        max_wait_s: float,
        observe_wait: Callable[[float], None] | None = None,
        pause_s: float = RECHECK_S,
    ) -> None:
        self.watermarks = watermarks
        self.needs = needs
        self.max_wait_s = max_wait_s
        self.observe_wait = observe_wait
        self.pause_s = pause_s

    @property
    def active(self) -> bool:
        """Whether any terminal feature depends on other agents' progress."""
        return self.needs.forwards_lag_ms is not None or self.needs.reports_lag_ms is not None

    def covers(self, pending: Pending) -> bool:
        """Whether the last reading makes ``pending``'s terminal reads final."""
        return self.watermarks.covers(
            pending.terminal_partition, pending.time_ms, self.needs, pending.reports_end
        )

    def read(self, pending: Sequence[Pending]) -> None:
        """Read again the watermarks of the partitions the last reading does not cover."""
        watermarks = self.watermarks
        needs = self.needs
        stale = {
            p.terminal_partition
            for p in pending
            if not watermarks.covers(p.terminal_partition, p.time_ms, needs, p.reports_end)
        }
        if stale:
            watermarks.read(stale)

    def split(self, pending: Sequence[Pending], *, read: bool = True) -> list[bool]:
        """Which of ``pending`` (in batch order) can be scored now.

        Per source partition, a prefix: once one of its transactions must wait, every
        later one of that partition waits too, so a customer's transactions keep their
        order. The watermarks of partitions the last reading does not cover are read
        again first (one round trip) when ``read``.
        """
        watermarks = self.watermarks
        needs = self.needs
        if read:
            self.read(pending)
        blocked: set[int] = set()
        out: list[bool] = []
        for p in pending:
            if p.source in blocked:
                out.append(False)
            elif watermarks.covers(p.terminal_partition, p.time_ms, needs, p.reports_end):
                out.append(True)
            else:
                blocked.add(p.source)
                out.append(False)
        return out

    def observe(self, waited_s: float) -> None:
        """Record how long transactions were held (the longest of those released together)."""
        if self.observe_wait is not None:
            self.observe_wait(waited_s)

    def gave_up(self, held: Sequence[Any]) -> None:
        """Say that held transactions are scored without waiting any longer."""
        lowest = min(held, key=lambda h: h.pending.time_ms).pending
        logger.warning(
            "scoring %d held transactions after %.0f s without final terminal watermarks "
            "(source partition %d at event time %d first): their terminal features may "
            "not be final",
            len(held),
            self.max_wait_s,
            lowest.source,
            lowest.time_ms,
        )
