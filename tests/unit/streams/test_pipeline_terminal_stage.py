"""TerminalStage: forwarded transactions and fraud reports into terminal states, exactly once.

Expected states are built by hand with `EntityWindows.record` / `record_fraud` on the same
starting states; the table double keeps entries per partition like the ``redis://`` store.
Forward messages are built with `encode_forwards`, as the scorer sends them: one message per
scorer micro-batch and terminal partition, each row naming its source partition and offset.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from typing import Any

import faust
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline_doubles import (
    Event,
    Message,
    Recorder,
    TableDouble,
    as_events,
    counter,
    header_dict,
    hostile_values,
)

from features.online import EntityState, EntityWindows
from features.spec import DEFAULT_FEATURES, Entity
from streams.contracts import Problem
from streams.metrics import PipelineMetrics
from streams.pipeline.forwards import Row, encode_forwards
from streams.pipeline.intake import Intake
from streams.pipeline.outputs import decode_state
from streams.pipeline.tables import DecodedStates
from streams.pipeline.terminal import TerminalStage
from streams.pipeline.terminals import TerminalLookup, mark_key, terminal_partition
from streams.pipeline.watermarks import IDLE, ReportMark, SourceMark, report_key
from streams.tablestore.fausttable import FaustTableStore, partition_store_of

PARTITIONS = 6
FORWARDS = "transactions-by-terminal"
REPORTS = "fraud-reports"
DLQ = "transactions-dlq"
T0 = 1_700_000_000_000
SECOND = 1000
DAY = 86_400_000
HOUR = 3_600_000
#: Two terminals in different partitions (checked below), so marks of one source
#: partition exist in both; TA2 lives in TA's partition, so one message holds both.
TA, TB = "TA", "TB"
PA, PB = terminal_partition(TA.encode(), PARTITIONS), terminal_partition(TB.encode(), PARTITIONS)
TA2 = next(
    t
    for t in (f"TA{i}" for i in itertools.count())
    if terminal_partition(t.encode(), PARTITIONS) == PA
)


def test_the_terminals_live_in_the_partitions_the_tests_need() -> None:
    assert PA != PB
    assert TA2 != TA
    assert terminal_partition(TA2.encode(), PARTITIONS) == PA


def windows() -> EntityWindows:
    return EntityWindows(DEFAULT_FEATURES, Entity.TERMINAL)


@dataclass
class Rig:
    recorder: Recorder
    table: TableDouble
    metrics: PipelineMetrics
    stage: TerminalStage


def rig(decoded: DecodedStates | None = None) -> Rig:
    recorder = Recorder()
    table = TableDouble(recorder)
    metrics = PipelineMetrics()
    stage = TerminalStage(
        windows=windows(),
        table=table,
        send=recorder.send,
        dlq=DLQ,
        metrics=metrics,
        decoded=decoded,
    )
    return Rig(recorder, table, metrics, stage)


def row(
    source: tuple[int, int], tx_id: str, customer: str, terminal: str, time_ms: int, amount: float
) -> Row:
    """A forward row: (source partition, source offset) first, as the scorer builds it."""
    return (source[0], source[1], tx_id, customer, terminal, time_ms, amount)


def report(tx_id: str, terminal: str, time_ms: int) -> bytes:
    return json.dumps(
        {
            "tx_id": tx_id,
            "customer_id": "C1",
            "terminal_id": terminal,
            "tx_time": time_ms,
            "reported_at": time_ms + DAY,
            "schema_version": 1,
        }
    ).encode()


class Batch:
    """Events of one terminal-partitioned topic, offsets increasing per partition."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.events: list[Event] = []
        self.offsets: dict[int, int] = {}

    def add(self, partition: int, key: bytes | None, value: bytes | None) -> Event:
        offset = self.offsets[partition] = self.offsets.get(partition, 50) + 1
        message = Message(self.topic, partition, offset, [], timestamp=T0 / 1000)
        event = Event(key, value, message)
        self.events.append(event)
        return event

    def forward(self, partition: int, *rows: Row) -> Event:
        """A forward message as the scorer sends it: no key, rows for one terminal partition."""
        return self.add(partition, None, encode_forwards(rows))

    def fraud_report(self, terminal: str, value: bytes, *, key: str | None = None) -> Event:
        """A fraud report, keyed by terminal id, in its terminal's partition."""
        partition = terminal_partition(terminal.encode(), PARTITIONS)
        return self.add(partition, (key or terminal).encode(), value)


def state_of(*transactions: tuple[int, float, str]) -> EntityState:
    state = EntityState()
    w = windows()
    for time_ms, amount, customer in transactions:
        w.record(state, time_ms, amount, customer)
    return state


def copy(state: EntityState) -> EntityState:
    return EntityState.from_bytes(state.to_bytes())


def written(recorder: Recorder) -> dict[tuple[int, bytes], tuple[bytes | None, Any]]:
    """Table writes by (partition, key), each written at most once."""
    out: dict[tuple[int, bytes], tuple[bytes | None, Any]] = {}
    for w in recorder.writes():
        assert (w.partition, w.key) not in out, f"{w.key!r} written twice"
        out[(w.partition, w.key)] = (w.value, w.event)
    return out


# --- forwarded transactions ------------------------------------------------------------------


async def test_forwards_are_recorded_and_marks_advance() -> None:
    r = rig()
    stored_a = state_of((T0 - DAY, 20.0, "C9"), (T0 - 2 * DAY, 30.0, "C8"))
    r.table.values[(PA, TA.encode())] = stored_a.to_bytes()
    batch = Batch(FORWARDS)
    a1 = batch.forward(
        PA,
        row((0, 10), "1", "C1", TA, T0, 10.0),
        row((0, 12), "3", "C3", TA, T0 - 3 * DAY, 9999999.99),
        row((1, 4), "6", "C2", TA2, T0 + 3 * SECOND, 0.01),
    )
    b1 = batch.forward(
        PB,
        row((1, 5), "2", "C2", TB, T0 + SECOND, 0.0),
        row((0, 11), "4", "C1", TB, T0 + 2 * SECOND, 1.5),
    )
    a2 = batch.forward(PA, row((2, 7), "5", "C1", TA, T0 + 5 * SECOND, 7.0))

    await r.stage.process_transactions(as_events(batch.events))

    expected_a, expected_a2, expected_b = copy(stored_a), EntityState(), EntityState()
    w = windows()
    w.record(expected_a, T0, 10.0, "C1")
    w.record(expected_a, T0 - 3 * DAY, 9999999.99, "C3")
    w.record(expected_a2, T0 + 3 * SECOND, 0.01, "C2")
    w.record(expected_b, T0 + SECOND, 0.0, "C2")
    w.record(expected_b, T0 + 2 * SECOND, 1.5, "C1")
    w.record(expected_a, T0 + 5 * SECOND, 7.0, "C1")
    assert r.recorder.sends() == []
    # Each entry written once, under the last event that changed it.
    assert written(r.recorder) == {
        (PA, TA.encode()): (expected_a.to_bytes(), a2),
        (PA, TA2.encode()): (expected_a2.to_bytes(), a1),
        (PB, TB.encode()): (expected_b.to_bytes(), b1),
        (PA, mark_key(PA, 0)): (b"12", a1),
        (PA, mark_key(PA, 1)): (b"4", a1),
        (PA, mark_key(PA, 2)): (b"7", a2),
        (PB, mark_key(PB, 1)): (b"5", b1),
        (PB, mark_key(PB, 0)): (b"11", b1),
    }
    assert EntityState.from_bytes(r.table.values[(PA, TA.encode())]).event_times() == sorted(
        [T0 - 2 * DAY, T0 - DAY, T0, T0 - 3 * DAY, T0 + 5 * SECOND]
    )
    # One prefetch of every state and mark the batch needs, by partition.
    [prefetched] = r.table.prefetched
    assert {p: set(keys) for p, keys in prefetched.items()} == {
        PA: {TA.encode(), TA2.encode(), mark_key(PA, 0), mark_key(PA, 1), mark_key(PA, 2)},
        PB: {TB.encode(), mark_key(PB, 0), mark_key(PB, 1)},
    }
    assert counter(r.metrics, "fraudstream_terminal_transactions_total") == 6
    assert counter(r.metrics, "fraudstream_duplicates_skipped_total", source="transactions") == 0
    assert counter(r.metrics, "fraudstream_terminal_event_time_seconds") == (T0 + 5 * SECOND) / 1000


async def test_the_scorers_lookup_shares_the_decoded_states_and_reads_each_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shared as build_pipeline shares them: what one side decoded, the other reuses.

    The lookup's state of a terminal is always the one of the bytes stored now: after
    the stage changed a state the lookup had read, the lookup reads the new one.
    """
    decodes: list[bytes] = []

    def counted(entity: str, key: bytes, raw: bytes | None) -> EntityState:
        if raw is not None:  # None: a new, empty state
            decodes.append(key)
        return decode_state(entity, key, raw)

    monkeypatch.setattr("streams.pipeline.tables.decode_state", counted)
    decoded = DecodedStates("terminal")
    r = rig(decoded)
    lookup = TerminalLookup(r.table, PARTITIONS, decoded)
    stored = state_of((T0 - DAY, 20.0, "C9"))
    r.table.values[(PA, TA.encode())] = stored.to_bytes()

    # Stored by someone else: the lookup decodes it once, the stage then takes that one.
    assert lookup.states([TA.encode()])[TA.encode()] == stored
    assert decodes == [TA.encode()]
    batch = Batch(FORWARDS)
    batch.forward(PA, row((0, 10), "1", "C1", TA, T0, 10.0))
    batch.forward(PB, row((0, 11), "2", "C1", TB, T0, 5.0))
    await r.stage.process_transactions(as_events(batch.events))
    assert decodes == [TA.encode()]

    # Written by the stage: read without decoding, and as written.
    read = lookup.states([TA.encode(), TB.encode()])
    assert decodes == [TA.encode()]
    assert read[TA.encode()].event_times() == [T0 - DAY, T0]
    assert read[TB.encode()].event_times() == [T0]
    for terminal, partition in ((TA, PA), (TB, PB)):
        assert read[terminal.encode()].to_bytes() == r.table.values[(partition, terminal.encode())]

    # Changed again by the stage (in place: the object the lookup returned before).
    batch = Batch(FORWARDS)
    batch.forward(PA, row((0, 12), "3", "C1", TA, T0 + SECOND, 1.0))
    await r.stage.process_transactions(as_events(batch.events))
    assert lookup.states([TA.encode()])[TA.encode()].event_times() == [T0 - DAY, T0, T0 + SECOND]
    assert decodes == [TA.encode()]


async def test_replayed_rows_at_or_below_the_mark_are_skipped() -> None:
    r = rig()
    stored = state_of((T0 - DAY, 20.0, "C9"))
    r.table.values[(PA, TA.encode())] = stored.to_bytes()
    r.table.values[(PA, mark_key(PA, 3))] = b"40"
    r.table.values[(PB, mark_key(PB, 3))] = b"10"  # another partition's mark for source 3
    batch = Batch(FORWARDS)
    # Entirely at or below the stored mark: skipped.
    batch.forward(
        PA,
        row((3, 39), "1", "C1", TA, T0 - 2 * SECOND, 1.0),
        row((3, 40), "2", "C1", TA, T0 - SECOND, 2.0),
    )
    # Straddles the stored mark (a replayed batch cut differently): only 41 is applied;
    # source 5 was never marked, so its offset 0 is new.
    straddling = batch.forward(
        PA,
        row((3, 40), "2", "C1", TA, T0 - SECOND, 2.0),
        row((5, 0), "6", "C2", TA, T0 + SECOND, 4.0),
        row((3, 41), "3", "C1", TA, T0, 3.0),
    )
    # Straddles the mark this batch advanced: 41 again is skipped, 42 applied.
    latest = batch.forward(
        PA,
        row((3, 41), "3", "C1", TA, T0, 3.0),
        row((3, 42), "4", "C1", TA, T0 + 2 * SECOND, 5.0),
    )
    other = batch.forward(PB, row((3, 12), "5", "C1", TB, T0, 5.0))

    await r.stage.process_transactions(as_events(batch.events))

    expected = copy(stored)
    w = windows()
    w.record(expected, T0 + SECOND, 4.0, "C2")
    w.record(expected, T0, 3.0, "C1")
    w.record(expected, T0 + 2 * SECOND, 5.0, "C1")
    out = written(r.recorder)
    assert out == {
        (PA, TA.encode()): (expected.to_bytes(), latest),
        (PA, mark_key(PA, 3)): (b"42", latest),
        (PA, mark_key(PA, 5)): (b"0", straddling),
        # Each terminal partition has its own mark: TB's partition was only at 10.
        (PB, TB.encode()): (state_of((T0, 5.0, "C1")).to_bytes(), other),
        (PB, mark_key(PB, 3)): (b"12", other),
    }
    assert counter(r.metrics, "fraudstream_duplicates_skipped_total", source="transactions") == 4
    assert counter(r.metrics, "fraudstream_terminal_transactions_total") == 4

    # The next batch replays the same forwards again: nothing changes.
    r.recorder.log.clear()
    await r.stage.process_transactions(as_events(batch.events))
    assert r.recorder.log == []
    assert counter(r.metrics, "fraudstream_duplicates_skipped_total", source="transactions") == 12
    assert counter(r.metrics, "fraudstream_terminal_transactions_total") == 4


async def test_rows_older_than_the_retention_are_dead_lettered_alone() -> None:
    r = rig()
    retention = windows().retention_ms
    newest = T0
    stored = state_of((newest, 20.0, "C9"))
    r.table.values[(PA, TA.encode())] = stored.to_bytes()
    batch = Batch(FORWARDS)
    too_old = row((0, 1), "1", "C1", TA, newest - retention, 1.25)
    message = batch.forward(
        PA,
        too_old,
        row((0, 2), "2", "C1", TA, newest - retention + 1, 2.0),
        row((0, 3), "3", "C2", TA, newest - SECOND, 3.0),
    )

    await r.stage.process_transactions(as_events(batch.events))

    [dead] = r.recorder.sends(DLQ)
    assert dead.key is None
    assert dead.partition is None
    # The row alone, as a JSON object of its fields.
    assert json.loads(dead.value or b"") == {
        "source_partition": 0,
        "source_offset": 1,
        "tx_id": "1",
        "customer_id": "C1",
        "terminal_id": TA,
        "tx_time": newest - retention,
        "amount": 1.25,
    }
    # Where the forward message that held it was.
    headers = header_dict(dead.headers)
    assert headers["fraudstream-problem"] == b"too_late"
    assert headers["fraudstream-field"] == b"tx_time"
    assert headers["fraudstream-source-topic"] == FORWARDS.encode()
    assert headers["fraudstream-source-partition"] == str(PA).encode()
    assert headers["fraudstream-source-offset"] == str(message.message.offset).encode()
    # The other rows of the message are applied; the mark covers the dead-lettered row too.
    expected = copy(stored)
    windows().record(expected, newest - retention + 1, 2.0, "C1")
    windows().record(expected, newest - SECOND, 3.0, "C2")
    assert written(r.recorder) == {
        (PA, TA.encode()): (expected.to_bytes(), message),
        (PA, mark_key(PA, 0)): (b"3", message),
    }
    r.recorder.assert_sends_precede_writes()
    assert counter(r.metrics, "fraudstream_dlq_records_total", problem=Problem.TOO_LATE) == 1
    assert counter(r.metrics, "fraudstream_terminal_transactions_total") == 2


TRACE_ID = b"4bf92f3577b34da6a3ce929d0e0e4736"
TRACED = b"00-" + TRACE_ID + b"-00f067aa0ba902b7-01"
#: The traceparent a traced score batch puts on its forward messages (`BatchSpans.counting`).
BATCH_SPAN = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_a_late_rows_dead_letter_carries_a_child_of_its_transactions_trace() -> None:
    r = rig()
    retention = windows().retention_ms
    r.table.values[(PA, TA.encode())] = state_of((T0, 20.0, "C9")).to_bytes()
    batch = Batch(FORWARDS)
    late = T0 - retention
    rows = [
        row((0, 1), "traced", "C1", TA, late, 1.0),
        row((0, 2), "untraced", "C2", TA, late, 2.0),
        row((0, 3), "applied", "C3", TA, T0, 3.0),
    ]
    batch.add(PA, None, encode_forwards(rows, None, [(0, TRACED.decode())]))
    # The same rows again in a message that came with a traceparent of its own (a traced
    # score batch's span): the row's trace replaces it, and a row without one keeps it.
    rows = [
        row((0, 4), "traced2", "C1", TA, late, 1.0),
        row((0, 5), "untraced2", "C2", TA, late, 2.0),
    ]
    batch.add(PA, None, encode_forwards(rows, None, [(0, TRACED.decode())]))
    batch.events[-1].message.headers = [("traceparent", BATCH_SPAN)]

    await r.stage.process_transactions(as_events(batch.events))

    dead = {
        json.loads(s.value or b"")["tx_id"]: header_dict(s.headers) for s in r.recorder.sends(DLQ)
    }
    assert sorted(dead) == ["traced", "traced2", "untraced", "untraced2"]
    assert all(h["fraudstream-problem"] == b"too_late" for h in dead.values())
    children = [dead["traced"]["traceparent"], dead["traced2"]["traceparent"]]
    for child in children:
        assert child[:36] == TRACED[:36]  # the transaction's trace id
        assert child[52:] == TRACED[52:]  # and flags
        assert child[36:52] not in (TRACED[36:52], BATCH_SPAN[36:52])  # the terminal's hop
    assert children[0][36:52] != children[1][36:52]
    assert "traceparent" not in dead["untraced"]
    assert dead["untraced2"]["traceparent"] == BATCH_SPAN
    assert counter(r.metrics, "fraudstream_dlq_records_total", problem=Problem.TOO_LATE) == 4


def raw_forward(*rows: list[Any], v: Any = 1) -> bytes:
    return json.dumps({"v": v, "rows": rows}).encode()


async def test_forward_messages_that_do_not_decode_are_dead_lettered_whole() -> None:
    r = rig()
    batch = Batch(FORWARDS)
    good = [0, 1, "1", "C1", TA, T0, 1.0]
    applied = batch.forward(PA, row((0, 1), "1", "C1", TA, T0, 1.0))
    bad = [
        (batch.add(PA, None, b"{not json"), b"not_json", None),
        (batch.add(PA, None, None), b"not_json", None),
        (batch.add(PA, None, b"[]"), b"not_an_object", None),
        (batch.add(PA, None, raw_forward(good, v=2)), b"bad_schema_version", b"v"),
        (batch.add(PA, None, b'{"v": 1}'), b"missing_field", b"rows"),
        # One bad row spoils the whole message: its good rows are not applied either.
        (
            batch.add(PA, None, raw_forward([0, 2, "2", "C1", TA, T0, 2.0], [0, 3, "3", "C1"])),
            b"wrong_type",
            b"rows[1]",
        ),
        (
            batch.add(PA, None, raw_forward([0, 4, "4", "C1", TA, T0, "4.00"])),
            b"wrong_type",
            b"rows[0].amount",
        ),
        (
            batch.add(PA, None, raw_forward([0, -5, "5", "C1", TA, T0, 5.0])),
            b"bad_value",
            b"rows[0]",
        ),
    ]

    await r.stage.process_transactions(as_events(batch.events))

    dlq = r.recorder.sends(DLQ)
    assert [s.value for s in dlq] == [e.value for e, _, _ in bad]  # the original bytes
    assert [s.key for s in dlq] == [None] * len(bad)
    headers = [header_dict(s.headers) for s in dlq]
    assert [(h["fraudstream-problem"], h.get("fraudstream-field")) for h in headers] == [
        (problem, field) for _, problem, field in bad
    ]
    assert [h["fraudstream-source-offset"] for h in headers] == [
        str(e.message.offset).encode() for e, _, _ in bad
    ]
    assert all(h["fraudstream-source-topic"] == FORWARDS.encode() for h in headers)
    assert all(h["fraudstream-source-partition"] == str(PA).encode() for h in headers)
    assert written(r.recorder) == {
        (PA, TA.encode()): (state_of((T0, 1.0, "C1")).to_bytes(), applied),
        (PA, mark_key(PA, 0)): (b"1", applied),
    }
    r.recorder.assert_sends_precede_writes()
    m = r.metrics
    assert counter(m, "fraudstream_dlq_records_total", problem=Problem.NOT_JSON) == 2
    assert counter(m, "fraudstream_dlq_records_total", problem=Problem.WRONG_TYPE) == 2
    assert counter(m, "fraudstream_terminal_transactions_total") == 1


async def test_an_empty_forward_message_changes_nothing() -> None:
    r = rig()
    batch = Batch(FORWARDS)
    batch.forward(PA)

    await r.stage.process_transactions(as_events(batch.events))

    assert r.recorder.log == []
    assert counter(r.metrics, "fraudstream_terminal_transactions_total") == 0


# --- fraud reports ---------------------------------------------------------------------------


async def test_fraud_reports_are_recorded_once_each() -> None:
    r = rig()
    stored_a = state_of((T0 - 2 * DAY, 20.0, "C9"))
    stored_b = state_of((T0 - DAY, 20.0, "C9"))
    assert windows().record_fraud(stored_b, T0 - DAY, "f0", T0)
    r.table.values[(PA, TA.encode())] = stored_a.to_bytes()
    r.table.values[(PB, TB.encode())] = stored_b.to_bytes()
    batch = Batch(REPORTS)
    batch.fraud_report(TA, report("f1", TA, T0 - 2 * DAY))
    second = batch.fraud_report(
        TA, report("f2", TA, T0 - 2 * DAY)
    )  # same time, another transaction
    batch.fraud_report(TA, report("f1", TA, T0 - 2 * DAY))  # duplicate in the batch
    batch.fraud_report(TB, report("f0", TB, T0 - DAY))  # duplicate of a stored report
    wrong_key = batch.fraud_report(TA, report("f3", TB, T0), key=TA)  # TB's report keyed by TA
    garbage = batch.fraud_report(TB, b"[]")
    later = batch.fraud_report(TB, report("f4", TB, T0 + DAY))

    await r.stage.process_reports(as_events(batch.events))

    last = {e.message.partition: e for e in batch.events}
    expected_a, expected_b = copy(stored_a), copy(stored_b)
    w = windows()
    assert w.record_fraud(expected_a, T0 - 2 * DAY, "f1", T0 - DAY)
    assert w.record_fraud(expected_a, T0 - 2 * DAY, "f2", T0 - DAY)
    assert w.record_fraud(expected_b, T0 + DAY, "f4", T0 + 2 * DAY)
    assert written(r.recorder) == {
        (PA, TA.encode()): (expected_a.to_bytes(), second),
        (PB, TB.encode()): (expected_b.to_bytes(), later),
        # Each partition's report watermark: its newest reported_at applied, duplicates
        # included (they were read), and the offset after its last report, written under
        # that report.
        (PA, report_key(PA)): (
            ReportMark(T0 - DAY, last[PA].message.offset + 1).to_bytes(),
            last[PA],
        ),
        (PB, report_key(PB)): (
            ReportMark(T0 + 2 * DAY, last[PB].message.offset + 1).to_bytes(),
            last[PB],
        ),
    }
    assert len(EntityState.from_bytes(r.table.values[(PA, TA.encode())]).fraud_times) == 2
    dlq = r.recorder.sends(DLQ)
    assert [(s.key, s.value) for s in dlq] == [
        (wrong_key.key, wrong_key.value),
        (garbage.key, garbage.value),
    ]
    assert [s.header("fraudstream-problem") for s in dlq] == [b"wrong_key", b"not_an_object"]
    assert [s.header("fraudstream-source-topic") for s in dlq] == [REPORTS.encode()] * 2
    r.recorder.assert_sends_precede_writes()
    m = r.metrics
    assert counter(m, "fraudstream_fraud_reports_total") == 3
    assert counter(m, "fraudstream_duplicates_skipped_total", source="fraud_reports") == 2
    assert counter(m, "fraudstream_dlq_records_total", problem="wrong_key") == 1
    assert counter(m, "fraudstream_dlq_records_total", problem="not_an_object") == 1


async def test_reports_that_change_nothing_write_nothing() -> None:
    r = rig()
    stored = state_of((T0, 20.0, "C9"))
    assert windows().record_fraud(stored, T0, "f0", T0 + DAY)
    r.table.values[(PA, TA.encode())] = stored.to_bytes()
    batch = Batch(REPORTS)
    batch.fraud_report(TA, report("f0", TA, T0))
    again = batch.fraud_report(TA, report("f0", TA, T0))
    # Those reports were applied before: the entry says so.
    applied = ReportMark(T0 + DAY, again.message.offset + 1).to_bytes()
    r.table.values[(PA, report_key(PA))] = applied

    await r.stage.process_reports(as_events(batch.events))

    assert r.recorder.log == []
    assert counter(r.metrics, "fraudstream_fraud_reports_total") == 0
    assert counter(r.metrics, "fraudstream_duplicates_skipped_total", source="fraud_reports") == 2


async def test_an_unreadable_terminal_state_starts_afresh() -> None:
    r = rig()
    r.table.values[(PA, TA.encode())] = b"\x09 not a state"
    batch = Batch(FORWARDS)
    event = batch.forward(PA, row((0, 1), "1", "C1", TA, T0, 1.0))

    await r.stage.process_transactions(as_events(batch.events))

    assert written(r.recorder)[(PA, TA.encode())] == (state_of((T0, 1.0, "C1")).to_bytes(), event)


def memory_store() -> FaustTableStore:
    """The store of a table on Faust's ``memory://``, as `build_pipeline` gets it."""
    app = faust.App("pipeline-unit-memory", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("terminal_windows", key_type=bytes, value_type=bytes, partitions=PARTITIONS)
    store = partition_store_of(table)
    assert isinstance(store, FaustTableStore)
    return store


async def test_with_a_memory_store_forwards_to_two_terminal_partitions_all_count() -> None:
    recorder = Recorder()
    table = memory_store()
    stage = TerminalStage(
        windows=windows(), table=table, send=recorder.send, dlq=DLQ, metrics=PipelineMetrics()
    )
    batch = Batch(FORWARDS)
    # Source partition 0 forwarded offsets 9 and 10 to TA's partition and 11 to TB's, in
    # one scorer batch; the terminal agent happens to take TB's partition first.
    early = batch.forward(
        PA,
        row((0, 9), "0", "C2", TA, T0 - SECOND, 0.5),
        row((0, 10), "1", "C1", TA, T0, 1.0),
    )
    late = batch.forward(PB, row((0, 11), "2", "C1", TB, T0 + SECOND, 2.0))

    await stage.process_transactions(as_events([late]))
    await stage.process_transactions(as_events([early]))

    metrics = stage.metrics
    assert counter(metrics, "fraudstream_duplicates_skipped_total", source="transactions") == 0
    assert counter(metrics, "fraudstream_terminal_transactions_total") == 3
    expected_a = state_of((T0 - SECOND, 0.5, "C2"), (T0, 1.0, "C1"))
    assert table.get_in(PA, TA.encode()) == expected_a.to_bytes()
    assert table.get_in(PB, TB.encode()) == state_of((T0 + SECOND, 2.0, "C1")).to_bytes()
    assert table.get_in(PA, mark_key(PA, 0)) == b"10"
    assert table.get_in(PB, mark_key(PB, 0)) == b"11"

    # Both replayed: every row is skipped, in both partitions.
    await stage.process_transactions(as_events([early, late]))
    assert counter(metrics, "fraudstream_duplicates_skipped_total", source="transactions") == 3
    assert counter(metrics, "fraudstream_terminal_transactions_total") == 3
    assert recorder.sends() == []


# --- hostile reports -------------------------------------------------------------------------


def checked_rig(now_ms: int) -> Rig:
    """A rig whose stage checks partitions (murmur2) and report times against ``now_ms``."""
    r = rig()
    r.stage.intake = Intake(
        partitions=PARTITIONS,
        max_ahead_ms=300_000,
        send=r.recorder.send,
        metrics=r.metrics,
        clock=lambda: now_ms / 1000,
    )
    r.stage.max_event_bytes = 2048
    return r


async def test_a_report_from_the_future_or_too_large_changes_nothing() -> None:
    now_ms = T0 + 3 * DAY
    r = checked_rig(now_ms)
    batch = Batch(REPORTS)
    big = json.loads(report("f1", TA, T0))
    big["padding"] = "x" * 100_000
    big["schema_version"] = 2  # a newer producer's extra field: only the size refuses it
    too_large = batch.fraud_report(TA, json.dumps(big).encode())
    dated_2099 = json.loads(report("f2", TA, T0))
    dated_2099["reported_at"] = 4_102_444_799_000
    future = batch.fraud_report(TA, json.dumps(dated_2099).encode())
    fine = batch.fraud_report(TA, report("f3", TA, T0))  # reported at T0 + DAY: fine

    await r.stage.process_reports(as_events(batch.events))

    dlq = r.recorder.sends(DLQ)
    assert [s.value for s in dlq] == [too_large.value, future.value]
    assert [s.header("fraudstream-problem") for s in dlq] == [b"too_large", b"future_event"]
    assert [w.event for w in r.recorder.writes()] == [fine, fine]  # the state, the watermark
    applied = ReportMark(T0 + DAY, fine.message.offset + 1).to_bytes()
    assert r.table.values[(PA, report_key(PA))] == applied
    state = EntityState.from_bytes(r.table.values[(PA, TA.encode())])
    assert len(state.fraud_times) == 1
    assert list(state.fraud_times) == [T0]  # reports move no clock: watermark_ms stays None
    assert state.watermark_ms is None


async def test_a_report_on_its_terminals_wrong_partition_is_rerouted() -> None:
    r = checked_rig(T0 + 3 * DAY)
    batch = Batch(REPORTS)
    stray = batch.add(PB, TA.encode(), report("f1", TA, T0))  # TA lives in PA

    await r.stage.process_reports(as_events(batch.events))

    (moved,) = r.recorder.sends(REPORTS)
    assert (moved.key, moved.value, moved.partition) == (TA.encode(), stray.value, PA)
    assert moved.header("fraudstream-rerouted-from") == f"{REPORTS}/{PB}/51".encode()
    # Only the partition's report watermark moves past the re-routed record.
    assert [w.key for w in r.recorder.writes()] == [report_key(PB)]
    assert counter(r.metrics, "fraudstream_records_rerouted_total", topic=REPORTS) == 1


_REPORTS = st.builds(
    lambda tx_id, terminal: json.loads(report(tx_id, terminal, T0)),
    st.sampled_from(["f1", "f2"]),
    st.sampled_from([TA, TB]),
)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none() | st.sampled_from([TA, TB, "x"]).map(str.encode) | st.binary(max_size=4),
            hostile_values(_REPORTS),
            st.integers(0, PARTITIONS - 1),
            st.lists(st.tuples(st.text(max_size=4), st.none() | st.binary(max_size=6)), max_size=2),
        ),
        min_size=1,
        max_size=10,
    ),
    st.lists(st.binary(max_size=40), max_size=3),
)
def test_any_reports_and_forwards_are_applied_rerouted_or_dead_lettered_never_raised(
    reports: list[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes | None]]]],
    forwards: list[bytes],
) -> None:
    r = checked_rig(T0 + 3 * DAY)
    batch = Batch(REPORTS)
    for key, value, partition, headers in reports:
        event = batch.add(partition, key, value)
        event.message.headers = headers  # type: ignore[assignment]
    asyncio.run(r.stage.process_reports(as_events(batch.events)))
    m = r.metrics
    dead = sum(counter(m, "fraudstream_dlq_records_total", problem=p.value) for p in Problem)
    applied = counter(m, "fraudstream_fraud_reports_total")
    repeated = counter(m, "fraudstream_duplicates_skipped_total", source="fraud_reports")
    rerouted = counter(m, "fraudstream_records_rerouted_total", topic=REPORTS)
    assert dead + applied + repeated + rerouted == len(reports)

    garbage = Batch(FORWARDS)
    for i, value in enumerate(forwards):
        garbage.add(i % PARTITIONS, None, value)
    asyncio.run(r.stage.process_transactions(as_events(garbage.events)))
    for sent in r.recorder.sends():
        for name, _ in sent.headers or ():
            name.encode()


# --- watermarks ------------------------------------------------------------------------------


async def test_declared_source_watermarks_are_written_with_the_rows_they_cover() -> None:
    r = rig()
    r.table.values[(PA, mark_key(PA, 1))] = SourceMark(40, T0 - DAY).to_bytes()
    batch = Batch(FORWARDS)
    first = batch.add(
        PA, None, encode_forwards([row((0, 7), "t1", "C1", TA, T0, 1.0)], {0: T0 - DAY, 1: 5})
    )
    tick = batch.add(PA, None, encode_forwards([], {2: IDLE}))
    behind = batch.add(PB, None, encode_forwards([], {0: T0 - 2 * DAY}))

    await r.stage.process_transactions(as_events(batch.events))

    marks = {k: v for k, v in written(r.recorder).items() if k[1].startswith(b"#")}
    assert marks == {
        (PA, mark_key(PA, 0)): (SourceMark(7, T0 - DAY).to_bytes(), first),
        # source 1 declared less than the mark holds: unchanged, not written
        (PA, mark_key(PA, 2)): (SourceMark(-1, IDLE).to_bytes(), tick),
        (PB, mark_key(PB, 0)): (SourceMark(-1, T0 - 2 * DAY).to_bytes(), behind),
    }
    assert counter(r.metrics, "fraudstream_terminal_transactions_total") == 1


@given(st.lists(st.one_of(st.just(IDLE), st.integers(0, 10**6)), min_size=1, max_size=8))
@settings(max_examples=50, deadline=None)
def test_a_source_watermark_only_goes_forward_while_the_source_is_active(
    declarations: list[int],
) -> None:
    r = rig()
    batch = Batch(FORWARDS)
    for watermark in declarations:
        batch.add(PA, None, encode_forwards([], {0: watermark}))

    asyncio.run(r.stage.process_transactions(as_events(batch.events)))

    expected = SourceMark(-1)
    for watermark in declarations:
        expected = expected.declared(watermark)
    assert SourceMark.from_bytes(r.table.values.get((PA, mark_key(PA, 0)))) == expected
    if IDLE not in declarations:
        assert expected.watermark == max(declarations)
