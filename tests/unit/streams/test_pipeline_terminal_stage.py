"""TerminalStage: forwarded transactions and fraud reports into terminal states, exactly once.

Expected states are built by hand with `EntityWindows.record` / `record_fraud` on the same
starting states; the table double keeps entries per partition like the ``redis://`` store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import faust
import pytest
from pipeline_doubles import Event, Message, Recorder, TableDouble, as_events, counter, header_dict

from features.online import EntityState, EntityWindows
from features.spec import DEFAULT_FEATURES, Entity
from streams.contracts import Problem
from streams.metrics import PipelineMetrics
from streams.pipeline.terminal import TerminalStage
from streams.pipeline.terminals import mark_key, source_header, terminal_partition

PARTITIONS = 6
FORWARDS = "transactions-by-terminal"
REPORTS = "fraud-reports"
DLQ = "transactions-dlq"
T0 = 1_700_000_000_000
SECOND = 1000
DAY = 86_400_000
#: Two terminals in different partitions (checked below), so marks of one source
#: partition exist in both.
TA, TB = "TA", "TB"
PA, PB = terminal_partition(TA.encode(), PARTITIONS), terminal_partition(TB.encode(), PARTITIONS)


def test_the_two_terminals_live_in_different_partitions() -> None:
    assert PA != PB


def windows() -> EntityWindows:
    return EntityWindows(DEFAULT_FEATURES, Entity.TERMINAL)


@dataclass
class Rig:
    recorder: Recorder
    table: TableDouble
    metrics: PipelineMetrics
    stage: TerminalStage


def rig(*, prefetch: bool = True) -> Rig:
    recorder = Recorder()
    table = TableDouble(recorder, prefetch=prefetch)
    metrics = PipelineMetrics()
    stage = TerminalStage(
        windows=windows(), table=table, send=recorder.send, dlq=DLQ, metrics=metrics
    )
    return Rig(recorder, table, metrics, stage)


def transaction(tx_id: str, customer: str, terminal: str, time_ms: int, amount: str) -> bytes:
    return json.dumps(
        {
            "tx_id": tx_id,
            "tx_time": time_ms,
            "customer_id": customer,
            "terminal_id": terminal,
            "amount": amount,
            "currency": "EUR",
            "schema_version": 1,
        }
    ).encode()


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
    """Events of one terminal-keyed topic, offsets increasing per partition."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.events: list[Event] = []
        self.offsets: dict[int, int] = {}

    def add(
        self,
        terminal: str,
        value: bytes | None,
        *,
        source: tuple[int, int] | None = None,
        key: str | None = None,
    ) -> Event:
        partition = terminal_partition(terminal.encode(), PARTITIONS)
        offset = self.offsets[partition] = self.offsets.get(partition, 50) + 1
        headers = [] if source is None else [("fraudstream-source", source_header(*source))]
        message = Message(self.topic, partition, offset, headers, timestamp=T0 / 1000)
        event = Event((key or terminal).encode(), value, message)
        self.events.append(event)
        return event


def state_of(*transactions: tuple[int, float, str]) -> EntityState:
    state = EntityState()
    w = windows()
    for time_ms, amount, customer in transactions:
        w.record(state, time_ms, amount, customer)
    return state


def copy(state: EntityState) -> EntityState:
    return EntityState.from_bytes(state.to_bytes())


def written(recorder: Recorder) -> dict[tuple[int, bytes], tuple[bytes, Any]]:
    """Table writes by (partition, key), each written at most once."""
    out: dict[tuple[int, bytes], tuple[bytes, Any]] = {}
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
    a1 = batch.add(TA, transaction("1", "C1", TA, T0, "10.00"), source=(0, 10))
    b1 = batch.add(TB, transaction("2", "C2", TB, T0 + SECOND, "0.00"), source=(1, 5))
    a2 = batch.add(TA, transaction("3", "C3", TA, T0 - 3 * DAY, "9999999.99"), source=(0, 12))
    b2 = batch.add(TB, transaction("4", "C1", TB, T0 + 2 * SECOND, "1.50"), source=(0, 11))
    a3 = batch.add(TA, transaction("5", "C1", TA, T0 + 5 * SECOND, "7.00"), source=(2, 7))

    await r.stage.process_transactions(as_events(batch.events))

    expected_a, expected_b = copy(stored_a), EntityState()
    w = windows()
    w.record(expected_a, T0, 10.0, "C1")
    w.record(expected_b, T0 + SECOND, 0.0, "C2")
    w.record(expected_a, T0 - 3 * DAY, 9999999.99, "C3")
    w.record(expected_b, T0 + 2 * SECOND, 1.5, "C1")
    w.record(expected_a, T0 + 5 * SECOND, 7.0, "C1")
    assert r.recorder.sends() == []
    assert written(r.recorder) == {
        (PA, TA.encode()): (expected_a.to_bytes(), a3),
        (PB, TB.encode()): (expected_b.to_bytes(), b2),
        (PA, mark_key(PA, 0)): (b"12", a2),
        (PA, mark_key(PA, 2)): (b"7", a3),
        (PB, mark_key(PB, 1)): (b"5", b1),
        (PB, mark_key(PB, 0)): (b"11", b2),
    }
    assert EntityState.from_bytes(r.table.values[(PA, TA.encode())]).event_times() == sorted(
        [T0 - 2 * DAY, T0 - DAY, T0, T0 - 3 * DAY, T0 + 5 * SECOND]
    )
    # One prefetch of every state and mark the batch needs, by partition.
    [prefetched] = r.table.data.prefetched
    assert {p: set(keys) for p, keys in prefetched.items()} == {
        PA: {TA.encode(), mark_key(PA, 0), mark_key(PA, 2)},
        PB: {TB.encode(), mark_key(PB, 0), mark_key(PB, 1)},
    }
    assert a1.message.partition == PA
    assert counter(r.metrics, "fraudstream_terminal_transactions_total") == 5
    assert counter(r.metrics, "fraudstream_duplicates_skipped_total", source="transactions") == 0
    assert counter(r.metrics, "fraudstream_terminal_event_time_seconds") == (T0 + 5 * SECOND) / 1000


async def test_replayed_forwards_at_or_below_the_mark_are_skipped() -> None:
    r = rig(prefetch=False)
    stored = state_of((T0 - DAY, 20.0, "C9"))
    r.table.values[(PA, TA.encode())] = stored.to_bytes()
    r.table.values[(PA, mark_key(PA, 3))] = b"40"
    r.table.values[(PB, mark_key(PB, 3))] = b"10"  # another partition's mark for source 3
    batch = Batch(FORWARDS)
    batch.add(TA, transaction("1", "C1", TA, T0 - 2 * SECOND, "1.00"), source=(3, 39))
    batch.add(TA, transaction("2", "C1", TA, T0 - SECOND, "2.00"), source=(3, 40))
    fresh = batch.add(TA, transaction("3", "C1", TA, T0, "3.00"), source=(3, 41))
    batch.add(TA, transaction("3", "C1", TA, T0, "3.00"), source=(3, 41))  # replayed in-batch
    unmarked = batch.add(TA, transaction("4", "C2", TA, T0 + SECOND, "4.00"))  # no header
    batch.add(TB, transaction("5", "C1", TB, T0, "5.00"), source=(3, 12))

    await r.stage.process_transactions(as_events(batch.events))

    expected = copy(stored)
    windows().record(expected, T0, 3.0, "C1")
    windows().record(expected, T0 + SECOND, 4.0, "C2")
    out = written(r.recorder)
    assert out[(PA, TA.encode())] == (expected.to_bytes(), unmarked)
    assert out[(PA, mark_key(PA, 3))] == (b"41", fresh)
    assert out[(PB, mark_key(PB, 3))][0] == b"12"  # each terminal partition has its own mark
    assert set(out) == {
        (PA, TA.encode()),
        (PA, mark_key(PA, 3)),
        (PB, TB.encode()),
        (PB, mark_key(PB, 3)),
    }
    assert counter(r.metrics, "fraudstream_duplicates_skipped_total", source="transactions") == 3
    assert counter(r.metrics, "fraudstream_terminal_transactions_total") == 3

    # The next batch replays the same forwards again: nothing changes.
    r.recorder.log.clear()
    await r.stage.process_transactions(as_events(batch.events[1:4]))
    assert r.recorder.log == []
    assert counter(r.metrics, "fraudstream_duplicates_skipped_total", source="transactions") == 6


async def test_forwards_older_than_the_retention_and_bad_ones_are_dead_lettered() -> None:
    r = rig()
    retention = windows().retention_ms
    newest = T0
    stored = state_of((newest, 20.0, "C9"))
    r.table.values[(PA, TA.encode())] = stored.to_bytes()
    batch = Batch(FORWARDS)
    too_old = batch.add(TA, transaction("1", "C1", TA, newest - retention, "1.00"), source=(0, 1))
    oldest_kept = batch.add(
        TA, transaction("2", "C1", TA, newest - retention + 1, "2.00"), source=(0, 2)
    )
    garbage = batch.add(TA, b"{not json", source=(0, 3))
    negative = batch.add(TA, transaction("3", "C1", TA, T0, "-1.00"), source=(0, 4))

    await r.stage.process_transactions(as_events(batch.events))

    dlq = r.recorder.sends(DLQ)
    assert [s.value for s in dlq] == [garbage.value, negative.value, too_old.value]
    problems = [header_dict(s.headers) for s in dlq]
    assert [h["fraudstream-problem"] for h in problems] == [b"not_json", b"bad_value", b"too_late"]
    assert problems[2]["fraudstream-field"] == b"tx_time"
    assert [h["fraudstream-source-offset"] for h in problems] == [
        str(e.message.offset).encode() for e in (garbage, negative, too_old)
    ]
    assert all(h["fraudstream-source-topic"] == FORWARDS.encode() for h in problems)
    assert [s.key for s in dlq] == [TA.encode()] * 3
    expected = copy(stored)
    windows().record(expected, newest - retention + 1, 2.0, "C1")
    out = written(r.recorder)
    assert out[(PA, TA.encode())] == (expected.to_bytes(), oldest_kept)
    r.recorder.assert_sends_precede_writes()
    assert counter(r.metrics, "fraudstream_dlq_records_total", problem=Problem.TOO_LATE) == 1
    assert counter(r.metrics, "fraudstream_dlq_records_total", problem=Problem.NOT_JSON) == 1
    assert counter(r.metrics, "fraudstream_terminal_transactions_total") == 1


# --- fraud reports ---------------------------------------------------------------------------


async def test_fraud_reports_are_recorded_once_each() -> None:
    r = rig()
    stored_a = state_of((T0 - 2 * DAY, 20.0, "C9"))
    stored_b = state_of((T0 - DAY, 20.0, "C9"))
    assert windows().record_fraud(stored_b, T0 - DAY, "f0")
    r.table.values[(PA, TA.encode())] = stored_a.to_bytes()
    r.table.values[(PB, TB.encode())] = stored_b.to_bytes()
    batch = Batch(REPORTS)
    batch.add(TA, report("f1", TA, T0 - 2 * DAY))
    second = batch.add(TA, report("f2", TA, T0 - 2 * DAY))  # same time, another transaction
    batch.add(TA, report("f1", TA, T0 - 2 * DAY))  # duplicate in the batch
    batch.add(TB, report("f0", TB, T0 - DAY))  # duplicate of a stored report
    wrong_key = batch.add(TA, report("f3", TB, T0), key=TA)  # TB's report keyed by TA
    garbage = batch.add(TB, b"[]")
    later = batch.add(TB, report("f4", TB, T0 + DAY))

    await r.stage.process_reports(as_events(batch.events))

    expected_a, expected_b = copy(stored_a), copy(stored_b)
    w = windows()
    assert w.record_fraud(expected_a, T0 - 2 * DAY, "f1")
    assert w.record_fraud(expected_a, T0 - 2 * DAY, "f2")
    assert w.record_fraud(expected_b, T0 + DAY, "f4")
    assert written(r.recorder) == {
        (PA, TA.encode()): (expected_a.to_bytes(), second),
        (PB, TB.encode()): (expected_b.to_bytes(), later),
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
    r = rig(prefetch=False)
    stored = state_of((T0, 20.0, "C9"))
    assert windows().record_fraud(stored, T0, "f0")
    r.table.values[(PA, TA.encode())] = stored.to_bytes()
    batch = Batch(REPORTS)
    batch.add(TA, report("f0", TA, T0))
    batch.add(TA, report("f0", TA, T0))

    await r.stage.process_reports(as_events(batch.events))

    assert r.recorder.log == []
    assert counter(r.metrics, "fraudstream_fraud_reports_total") == 0
    assert counter(r.metrics, "fraudstream_duplicates_skipped_total", source="fraud_reports") == 2


@pytest.mark.parametrize("prefetch", [True, False])
async def test_an_unreadable_terminal_state_starts_afresh(prefetch: bool) -> None:
    r = rig(prefetch=prefetch)
    r.table.values[(PA, TA.encode())] = b"\x09 not a state"
    batch = Batch(FORWARDS)
    event = batch.add(TA, transaction("1", "C1", TA, T0, "1.00"), source=(0, 1))

    await r.stage.process_transactions(as_events(batch.events))

    assert written(r.recorder)[(PA, TA.encode())] == (state_of((T0, 1.0, "C1")).to_bytes(), event)


class MemoryStoreTable:
    """A table over a real Faust ``memory://`` store, as `build_pipeline` gets with it."""

    def __init__(self) -> None:
        app = faust.App("pipeline-unit-memory", broker="kafka://127.0.0.1:1", store="memory://")
        self.data: Any = app.Table(
            "terminal_windows", key_type=bytes, value_type=bytes, partitions=PARTITIONS
        ).data

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        value: bytes | None = self.data.get(key, default)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.data[key] = value


async def test_with_a_memory_store_forwards_to_two_terminal_partitions_all_count() -> None:
    recorder = Recorder()
    table = MemoryStoreTable()
    stage = TerminalStage(
        windows=windows(), table=table, send=recorder.send, dlq=DLQ, metrics=PipelineMetrics()
    )
    batch = Batch(FORWARDS)
    # Source partition 0 forwarded offset 10 to TA's partition and 11 to TB's; the
    # terminal agent happens to take TB's partition first.
    early = batch.add(TA, transaction("1", "C1", TA, T0, "1.00"), source=(0, 10))
    late = batch.add(TB, transaction("2", "C1", TB, T0 + SECOND, "2.00"), source=(0, 11))

    await stage.process_transactions(as_events([late]))
    await stage.process_transactions(as_events([early]))

    assert (
        counter(stage.metrics, "fraudstream_duplicates_skipped_total", source="transactions") == 0
    )
    assert table.get(TA.encode()) == state_of((T0, 1.0, "C1")).to_bytes()
