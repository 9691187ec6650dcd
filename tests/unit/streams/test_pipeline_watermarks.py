"""Terminal watermarks: entry formats, what reads need, the scorer's clock and gate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from unittest.mock import patch

from hypothesis import example, given, settings
from hypothesis import strategies as st

from features.spec import DEFAULT_FEATURES, HANDBOOK_FEATURES, Entity
from streams.pipeline import watermarks as watermarks_module
from streams.pipeline.terminals import mark_key
from streams.pipeline.watermarks import (
    IDLE,
    LIVE_WITHIN_MS,
    REPORT_DELIVERY_MS,
    Pending,
    ReportEnds,
    ReportMark,
    SourceClock,
    SourceMark,
    TerminalNeeds,
    TerminalWatermarks,
    WatermarkGate,
    partition_watermarks,
    report_key,
)

HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_700_000_000_000
SOURCES = 3


# --- entries -------------------------------------------------------------------------------


@given(st.integers(-1, 2**40), st.one_of(st.none(), st.just(IDLE), st.integers(0, 2**45)))
def test_a_source_mark_reads_back_as_written(offset: int, watermark: int | None) -> None:
    mark = SourceMark(offset, watermark)
    assert SourceMark.from_bytes(mark.to_bytes()) == mark


def test_a_mark_of_the_older_format_is_an_offset_without_watermark() -> None:
    assert SourceMark.from_bytes(b"41") == SourceMark(41, None)
    assert SourceMark.from_bytes(None) == SourceMark(-1, None)


def test_declarations_move_forward_except_from_idle() -> None:
    mark = SourceMark(7, 100)
    assert mark.declared(50) is mark
    assert mark.declared(150) == SourceMark(7, 150)
    assert mark.declared(IDLE) == SourceMark(7, IDLE)
    assert SourceMark(7, IDLE).declared(50) == SourceMark(7, 50)
    assert SourceMark(7).declared(50) == SourceMark(7, 50)


@given(st.integers(-1, 2**45), st.integers(0, 2**45))
def test_a_report_mark_reads_back_as_written(reported_at: int, applied_to: int) -> None:
    mark = ReportMark(reported_at, applied_to)
    assert ReportMark.from_bytes(mark.to_bytes()) == mark
    assert ReportMark.from_bytes(None) == ReportMark(-1, 0)


def test_a_report_mark_only_moves_forward() -> None:
    mark = ReportMark(T0, 40)
    assert mark.advanced(T0 - DAY, 30) is mark
    assert mark.advanced(T0 - DAY, 41) == ReportMark(T0, 41)
    assert mark.advanced(T0 + 1, 40) == ReportMark(T0 + 1, 40)


def test_reports_cover_a_read_when_one_that_late_is_applied_or_the_partition_is_read() -> None:
    mark = ReportMark(T0 - HOUR, 40)
    assert mark.covers(T0, HOUR, None)
    assert not mark.covers(T0 + 1, HOUR, None)  # and the end is not known
    assert mark.covers(T0 + 1, HOUR, 40)  # everything up to the end read is applied
    assert not mark.covers(T0 + 1, HOUR, 41)


# --- what reads need -----------------------------------------------------------------------


def test_the_default_features_need_forwards_half_a_week_back_and_reports_an_hour_back() -> None:
    # Forwards: the 7-day delay, capped at half the terminal's 7 days of lateness.
    assert TerminalNeeds.of(DEFAULT_FEATURES) == TerminalNeeds(7 * DAY // 2, HOUR)


def test_features_without_terminal_windows_need_nothing() -> None:
    customer_only = DEFAULT_FEATURES.select(
        [f.name for f in DEFAULT_FEATURES if f.entity is not Entity.TERMINAL]
    )
    assert TerminalNeeds.of(customer_only) == TerminalNeeds(None, None)
    assert TerminalNeeds.of(HANDBOOK_FEATURES).forwards_lag_ms == 7 * DAY // 2


def test_a_partition_covers_a_read_when_each_active_source_and_the_reports_are_far_enough() -> None:
    needs = TerminalNeeds(7 * DAY, HOUR)
    t = T0
    marks = [
        SourceMark(5, t - 7 * DAY).to_bytes(),
        SourceMark(9, IDLE).to_bytes(),
        SourceMark(2, t).to_bytes(),
    ]
    reports = ReportMark(t - HOUR).to_bytes()
    assert partition_watermarks(marks, reports).covers(t, needs)
    assert not partition_watermarks(marks, reports).covers(t + 1, needs)  # source 0 behind
    late_reports = ReportMark(t - HOUR - 1, 12).to_bytes()
    assert not partition_watermarks(marks, late_reports).covers(t, needs)
    # The reports partition applied to the end it had when the transaction was sent:
    assert partition_watermarks(marks, late_reports).covers(t, needs, 12)
    assert not partition_watermarks(marks, late_reports).covers(t, needs, 13)
    undeclared = [*marks[:2], SourceMark(3).to_bytes()]
    assert not partition_watermarks(undeclared, reports).covers(t, needs)
    absent = [*marks[:2], None]
    assert not partition_watermarks(absent, reports).covers(t, needs)
    all_idle = [SourceMark(1, IDLE).to_bytes()] * 3
    assert partition_watermarks(all_idle, reports).covers(t, needs)


# --- the scorer's clock ----------------------------------------------------------------------


def test_a_source_declares_its_newest_sent_time_minus_the_lateness() -> None:
    clock = SourceClock(DAY)
    assert clock.watermark(0) is None
    clock.saw(0, T0)
    clock.saw(0, T0 - 5 * DAY)  # a late one moves nothing back
    assert clock.watermark(0) == T0 - DAY
    assert clock.declarations_after({0: T0 + DAY, 1: T0}) == {0: T0, 1: T0 - DAY}
    assert clock.declarations([0, 1]) == {0: T0 - DAY}


def test_a_held_source_declares_just_below_its_first_waiting_transaction() -> None:
    clock = SourceClock(DAY)
    clock.saw(0, T0)
    clock.hold(0, [T0 - 2 * HOUR + 5, T0 + 3 * DAY])
    assert clock.watermark(0) == T0 - 2 * HOUR + 4
    clock.hold(1, [T0 + 2 * DAY])  # never sent anything: declares from what waits
    assert clock.watermark(1) == T0 + DAY
    assert clock.declarations_after({0: T0 + HOUR}) == {0: T0 + HOUR - DAY}
    assert clock.declarations_after({0: T0 + 2 * DAY}) == {0: T0 - 2 * HOUR + 4}
    clock.release()
    assert clock.watermark(0) == T0 - DAY
    assert clock.watermark(1) is None


def test_idleness_is_declared_only_on_a_reading_newer_than_the_last_send() -> None:
    clock = SourceClock(DAY)
    clock.saw(0, T0)
    reading = clock.generation
    clock.set_idle(0, True, reading)
    assert clock.watermark(0) == IDLE
    clock.saw(0, T0 + 1)  # events again: active at once
    assert clock.watermark(0) == T0 + 1 - DAY
    clock.set_idle(0, True, reading)  # a reading taken before that send
    assert clock.watermark(0) == T0 + 1 - DAY
    clock.set_idle(0, True, clock.generation)
    assert clock.watermark(0) == IDLE
    clock.set_idle(0, False)
    assert clock.watermark(0) == T0 + 1 - DAY


def test_a_revoked_source_is_forgotten() -> None:
    clock = SourceClock(DAY)
    clock.saw(0, T0)
    clock.saw(1, T0)
    clock.set_idle(1, True, clock.generation)
    clock.forget([0])
    assert clock.declarations([0, 1]) == {0: T0 - DAY}


# --- the gate --------------------------------------------------------------------------------


class Store:
    """A terminal table's entries by partition, with the peeks counted."""

    def __init__(self) -> None:
        self.entries: dict[int, dict[bytes, bytes]] = {}
        self.peeks = 0

    def declare(self, partition: int, source: int, watermark: int) -> None:
        self.entries.setdefault(partition, {})[mark_key(partition, source)] = SourceMark(
            0, watermark
        ).to_bytes()

    def reports(self, partition: int, mark: ReportMark) -> None:
        self.entries.setdefault(partition, {})[report_key(partition)] = mark.to_bytes()

    def peek(self, partition_keys: Mapping[int, Sequence[bytes]]) -> dict[int, list[bytes | None]]:
        self.peeks += 1
        return {p: [self.entries.get(p, {}).get(k) for k in ks] for p, ks in partition_keys.items()}


def gate(store: Store, max_wait_s: float = 5.0) -> WatermarkGate:
    waits: list[float] = []
    g = WatermarkGate(
        TerminalWatermarks(store, SOURCES, mark_key),
        TerminalNeeds(7 * DAY, HOUR),
        max_wait_s=max_wait_s,
        observe_wait=waits.append,
    )
    g.waits = waits  # type: ignore[attr-defined]
    return g


def everything_at(store: Store, time_ms: int, reports_ms: int = T0) -> None:
    """Every source declared at ``time_ms`` and reports applied to ``reports_ms`` everywhere."""
    for partition in range(SOURCES):
        for source in range(SOURCES):
            store.declare(partition, source, time_ms)
        store.reports(partition, ReportMark(reports_ms))


def test_each_source_partition_goes_as_far_as_its_first_transaction_that_must_wait() -> None:
    store = Store()
    everything_at(store, T0 - 7 * DAY)
    store.reports(2, ReportMark(T0 - 2 * HOUR))  # partition 2's reports are behind
    g = gate(store)
    pending = [
        Pending(0, T0, 0),
        Pending(1, T0, 2),  # waits for partition 2's reports
        Pending(0, T0 - DAY, 1),
        Pending(1, T0 - 2 * DAY, 0),  # after a waiting one of its source: waits too
        Pending(2, T0 + 1, 1),  # one ms past what source watermarks cover
    ]
    assert g.split(pending) == [True, False, True, False, False]
    assert store.peeks == 1
    assert g.split(pending, read=False) == [True, False, True, False, False]
    assert store.peeks == 1


def test_report_ends_are_read_after_every_report_a_transaction_reads_was_sent() -> None:
    reads: list[int] = []
    now = int(time.time() * 1000) - 5  # readings are asked for in later milliseconds

    async def read() -> dict[int, int]:
        reads.append(int(time.time() * 1000))
        return {0: 7, 1: 9}

    ends = ReportEnds(read, HOUR)
    live = Pending(0, now - 1000, 1, produced_ms=now)  # needs reports sent by now - 55 min
    # Replayed: the reports before it were in the log when this worker received it.
    replayed = Pending(0, T0, 0, produced_ms=now, received_ms=now)
    assert ends.sent_by(live) == now - 1000 - HOUR + REPORT_DELIVERY_MS
    assert ends.sent_by(replayed) == now
    assert ends.sent_by(Pending(0, now - LIVE_WITHIN_MS - 1, 0, now, now)) == now
    # Produced long before it was received (a backlog): delivered five minutes after.
    backlog = Pending(0, T0, 0, produced_ms=now - HOUR, received_ms=now)
    assert ends.sent_by(backlog) == now - HOUR + REPORT_DELIVERY_MS
    # Receipt unknown: the reports' delivery bound after it was produced.
    assert ends.sent_by(Pending(0, T0, 0, produced_ms=now)) == now + REPORT_DELIVERY_MS

    ends.received([live, replayed])  # as the scorer notes what it receives
    asyncio.run(ends.attach([live, replayed]))
    assert (live.reports_end, replayed.reports_end) == (9, 7)
    assert len(reads) == 1
    # A live one later: the reading is recent enough, no new request.
    later = Pending(0, now, 0, produced_ms=now + 10)
    asyncio.run(ends.attach([later]))
    assert later.reports_end == 7
    assert len(reads) == 1
    # Replayed, received after the reading, reading no report newer than the replayed
    # one before the reading: covered by it, no new request.
    received = time.time() * 1000 + 1
    again = Pending(0, T0 + HOUR - 1, 1, produced_ms=now, received_ms=received)
    asyncio.run(ends.attach([again]))
    assert again.reports_end == 9
    assert len(reads) == 1
    # One sent after the reading that reads newer reports: a new reading, still older
    # than it.
    newer = Pending(0, T0 + 2 * HOUR, 1, produced_ms=now, received_ms=time.time() * 1000 + 60_000)
    asyncio.run(ends.attach([newer]))
    assert len(reads) == 2
    assert newer.reports_end is None


def test_a_transaction_takes_the_oldest_reading_of_the_reports_it_reads() -> None:
    # In a fast replay an hour of event time is milliseconds: the newest reading holds
    # reports sent after the ones a transaction reads, which its terminal agents may
    # not have applied yet.
    answers = iter([{0: 3}, {0: 5}, {0: 8}])

    async def read() -> dict[int, int]:
        return next(answers)

    ends = ReportEnds(read, HOUR)

    def arrives(time_ms: int) -> Pending:
        time.sleep(0.002)  # received after the readings asked for so far
        at = time.time() * 1000
        time.sleep(0.002)  # and before the next one
        pending = Pending(0, time_ms, 0, produced_ms=int(at), received_ms=at)
        ends.received([pending])  # as the scorer notes what it receives
        return pending

    first = arrives(T0)
    asyncio.run(ends.attach([first]))  # covers the reports before T0
    second = arrives(T0 + 2 * HOUR)
    asyncio.run(ends.attach([second]))  # covers the reports before T0 + 2 h
    assert (first.reports_end, second.reports_end) == (3, 5)
    # Reads reports up to T0 + 30 min: the first reading does not cover them.
    between = arrives(T0 + HOUR + 30 * 60_000)
    assert ends.attach_known(between)
    assert between.reports_end == 5
    # Reads reports up to T0 - 1 ms: the first reading does.
    early = arrives(T0 + HOUR - 1)
    assert ends.attach_known(early)
    assert early.reports_end == 3
    # Reads reports up to T0 + 2 h: none covers it yet.
    late = arrives(T0 + 3 * HOUR)
    assert not ends.attach_known(late)
    asyncio.run(ends.attach([late]))
    assert late.reports_end == 8


def test_report_ends_that_cannot_be_read_leave_transactions_waiting() -> None:
    async def down() -> dict[int, int]:
        raise ConnectionError("broker down")

    pending = Pending(0, T0, 0, produced_ms=int(time.time() * 1000))
    asyncio.run(ReportEnds(down, HOUR).attach([pending]))
    assert pending.reports_end is None


class _Clock:
    """Stands for the ``time`` module in `ReportEnds`: a wall clock moved by hand."""

    def __init__(self) -> None:
        self.ms = 1_800_000_000_000.0

    def time(self) -> float:
        return self.ms / 1000


@settings(max_examples=400)
@example(
    steps=[("transaction", 0), ("batch", 1), ("report", 0), ("transaction", HOUR)],
    readings_kept=2,
)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["report", "transaction", "batch"]),
            st.one_of(  # event time advance, the hour's edges often
                st.sampled_from([0, 1, HOUR - 1, HOUR, HOUR + 1]),
                st.integers(min_value=0, max_value=3 * HOUR),
            ),
        ),
        max_size=80,
    ),
    readings_kept=st.integers(min_value=1, max_value=4),
)
def test_any_reading_a_replayed_transaction_takes_holds_every_report_it_reads(
    steps: list[tuple[str, int]], readings_kept: int
) -> None:
    # A replay in event-time order: a transaction reaches the worker after every report
    # before its time is in the log; reports after it may land before a reading.
    clock = _Clock()
    with patch.object(watermarks_module, "time", clock):
        log: list[int] = []  # reported_at of each report in the partition, in order

        async def read() -> dict[int, int]:
            return {0: len(log)}

        ends = ReportEnds(read, HOUR, kept=readings_kept)
        event_ms = T0
        batch: list[Pending] = []
        taken: list[Pending] = []

        def settle(tick: int) -> None:
            clock.ms += tick  # a reading in the millisecond of a receipt does not count
            ends.received(batch)
            asyncio.run(ends.attach(list(batch)))
            taken.extend(batch)
            batch.clear()

        for kind, advance in steps:
            if kind == "report":
                clock.ms += 1
                event_ms += advance
                log.append(event_ms)
            elif kind == "transaction":
                clock.ms += 1
                event_ms += advance
                received = clock.ms
                produced = int(received)  # a replay: handed over just now
                batch.append(Pending(0, event_ms, 0, produced_ms=produced, received_ms=received))
            else:
                settle(advance % 2)
        settle(1)
        asyncio.run(ends.attach([p for p in taken if p.reports_end is None]))
        for pending in taken:
            needed = sum(1 for reported_at in log if reported_at <= pending.time_ms - HOUR)
            assert pending.reports_end is not None
            assert pending.reports_end >= needed
