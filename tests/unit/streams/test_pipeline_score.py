"""ScoreStage.process on micro-batches: features, scores, alerts, forwards, dead letters, state.

The stage runs with a real model (a small logistic regression in a temporary registry) and
in-memory doubles of its collaborators (`pipeline_doubles`). Features are checked against
an independent run of `features.online.OnlineEngine` over the same valid transactions
(customer and transaction features) and against reads of the stored terminal states.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from faust.streams import current_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_doubles import (
    Event,
    Message,
    PeekStore,
    Recorder,
    Sent,
    TableDouble,
    as_events,
    counter,
    header_dict,
    hostile_values,
)

from features.online import (
    KEEPS_REPORT_TIMES,
    EntityState,
    EntityWindows,
    EventTooOldError,
    OnlineEngine,
    OnlineFeatures,
)
from features.spec import DEFAULT_FEATURES, HANDBOOK_FEATURES, Entity
from models.estimators import BASELINE_PARAMS, ModelKind, fit
from models.registry import LoadedModel, ModelRegistry
from models.training import feature_baseline
from streams.contracts import DecodeError, Problem, decode_alert, decode_score
from streams.kafka import SENT_AT_HEADER
from streams.metrics import PipelineMetrics
from streams.pipeline import score as score_module
from streams.pipeline.forwards import ForwardRow, decode_forward_message, decode_forwards
from streams.pipeline.intake import Intake
from streams.pipeline.model import ModelSlot
from streams.pipeline.score import ScoreStage, ScoreTopics
from streams.pipeline.terminal import TerminalStage
from streams.pipeline.terminals import TerminalLookup, mark_key, terminal_partition
from streams.pipeline.watermarks import (
    ReportEnds,
    ReportMark,
    SourceClock,
    SourceMark,
    TerminalNeeds,
    TerminalWatermarks,
    WatermarkGate,
    report_key,
)
from streams.records import Alert, Score, alert_id

NAMES = DEFAULT_FEATURES.names
PARTITIONS = 6
MAX_EVENT_BYTES = 1024
THRESHOLD = 0.3
REASONS = 3
TOPICS = ScoreTopics(
    source="transactions",
    alerts="alerts",
    scores="scores",
    forwards="transactions-by-terminal",
    dlq="transactions-dlq",
)
T0 = 1_700_000_000_000  # a Tuesday, 22:13:20 UTC
SECOND = 1000
HOUR = 3_600_000
DAY = 86_400_000
#: The partition of each customer's events (any fixed assignment will do for the stage).
CUSTOMER_PARTITIONS = {"C1": 0, "C2": 1, "C3": 2, "C4": 3, "C5": 5, "C6": 4}

Vector = list[float]


# --- the model -------------------------------------------------------------------------------


def training_matrix(rows: int = 2000, seed: int = 0) -> npt.NDArray[np.float64]:
    """Feature rows in plausible ranges; the label will depend on the amount only."""
    rng = np.random.default_rng(seed)
    columns = []
    for name in NAMES:
        if "DURING" in name:
            column = rng.integers(0, 2, rows).astype(np.float64)
        elif "RISK" in name:
            column = rng.uniform(0, 0.3, rows)
        elif "TO_AVG" in name:
            column = rng.uniform(0, 5, rows)
        elif "SECONDS" in name:
            column = rng.uniform(0, 30 * 86_400, rows)
        elif "NB_" in name:
            column = rng.integers(0, 30, rows).astype(np.float64)
        else:  # amounts
            column = rng.uniform(0, 3000, rows)
        columns.append(column)
    return np.column_stack(columns)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    x = training_matrix()
    y = x[:, NAMES.index("TX_AMOUNT")] > 800
    kind = ModelKind.LOGISTIC_REGRESSION
    estimator = fit(kind, BASELINE_PARAMS[kind], x, y, seed=0)
    registry = ModelRegistry(Path(tmp_path_factory.mktemp("registry")))
    metadata = registry.register(
        estimator,
        kind=kind,
        feature_names=NAMES,
        threshold={"value": THRESHOLD, "objective": "fixed"},
        metrics={},
        params=BASELINE_PARAMS[kind],
        training={"rows": len(x)},
        feature_baseline=feature_baseline(x),
    )
    return registry.load(metadata.version, NAMES)


@pytest.fixture
def slot(model: LoadedModel) -> Iterator[ModelSlot]:
    slot = ModelSlot(NAMES, reasons=REASONS)
    slot.activate(model)
    yield slot
    close(slot)


def close(slot: ModelSlot) -> None:
    """Undo the scorer's process-wide thread pinning."""
    if slot.active is not None:
        slot.active.scorer.close()


# --- the stage and its batches --------------------------------------------------------------


@dataclass
class Rig:
    recorder: Recorder
    customers: TableDouble
    peek: PeekStore
    metrics: PipelineMetrics
    stage: ScoreStage


def rig(slot: ModelSlot, *, topics: ScoreTopics = TOPICS) -> Rig:
    recorder = Recorder()
    customers = TableDouble(recorder)
    peek = PeekStore(PARTITIONS)
    metrics = PipelineMetrics()
    stage = ScoreStage(
        online=OnlineFeatures(DEFAULT_FEATURES),
        customers=customers,
        terminals=TerminalLookup(peek, PARTITIONS),
        slot=slot,
        send=recorder.send,
        topics=topics,
        metrics=metrics,
        max_event_bytes=MAX_EVENT_BYTES,
    )
    return Rig(recorder, customers, peek, metrics, stage)


def payload(
    tx_id: str, customer: str, terminal: str, time_ms: int, amount: str = "10.00"
) -> dict[str, Any]:
    return {
        "tx_id": tx_id,
        "tx_time": time_ms,
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": amount,
        "currency": "EUR",
        "schema_version": 1,
        "channel": "pos",
    }


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


class Batch:
    """Builds the events of a micro-batch, with increasing offsets per partition."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.events: list[Event] = []
        self.offsets: dict[int, int] = {}

    def add(
        self,
        key: str | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        sent_ms: int | None = None,
    ) -> Event:
        if partition is None:
            assert key is not None
            partition = CUSTOMER_PARTITIONS[key]
        offset = self.offsets[partition] = self.offsets.get(partition, 100 + 10 * partition) + 1
        headers = [] if sent_ms is None else [(SENT_AT_HEADER, str(sent_ms).encode())]
        message = Message(
            TOPICS.source, partition, offset, headers, timestamp=(self.now_ms - 60_000) / 1000
        )
        event = Event(None if key is None else key.encode(), value, message)
        self.events.append(event)
        return event


def positions(entity: Entity) -> list[int]:
    return [i for i, feature in enumerate(DEFAULT_FEATURES) if feature.entity is entity]


def terminal_state(
    *transactions: tuple[int, float], frauds: tuple[tuple[int, str], ...] = ()
) -> EntityState:
    windows = EntityWindows(DEFAULT_FEATURES, Entity.TERMINAL)
    state = EntityState()
    for i, (time_ms, amount) in enumerate(transactions):
        windows.record(state, time_ms, amount, f"P{i}")
    for time_ms, tx_id in frauds:
        assert windows.record_fraud(state, time_ms, tx_id, time_ms + DAY)
    return state


def expected_vector(
    engine_vector: Vector, terminal: EntityState, time_ms: int, amount: float
) -> Vector:
    """Transaction and customer features from the engine; terminal ones read from the state."""
    read = [0.0] * len(NAMES)
    EntityWindows(DEFAULT_FEATURES, Entity.TERMINAL).read_into(terminal, time_ms, amount, read)
    vector = list(engine_vector)
    for i in positions(Entity.TERMINAL):
        vector[i] = read[i]
    return vector


def decoded_scores(recorder: Recorder) -> dict[str, tuple[Sent, Score]]:
    out: dict[str, tuple[Sent, Score]] = {}
    for sent in recorder.sends(TOPICS.scores):
        record = decode_score(sent.value)
        assert isinstance(record, Score), record
        assert record.tx_id not in out
        out[record.tx_id] = (sent, record)
    return out


def decoded_alerts(recorder: Recorder) -> dict[str, tuple[Sent, Alert]]:
    out: dict[str, tuple[Sent, Alert]] = {}
    for sent in recorder.sends(TOPICS.alerts):
        record = decode_alert(sent.value)
        assert isinstance(record, Alert), record
        assert record.tx_id not in out
        out[record.tx_id] = (sent, record)
    return out


def forwarded(recorder: Recorder) -> dict[int, list[ForwardRow]]:
    """The forward messages of a batch by terminal partition, decoded (one per partition)."""
    out: dict[int, list[ForwardRow]] = {}
    for sent in recorder.sends(TOPICS.forwards):
        assert (sent.key, sent.headers) == (None, None)
        assert sent.partition is not None
        assert sent.partition not in out, f"two forward messages to partition {sent.partition}"
        rows = decode_forwards(sent.value)
        assert isinstance(rows, list), rows
        out[sent.partition] = rows
    return out


#: A valid transaction of a batch: (event, tx_id, customer, terminal, tx_time, amount string).
Forwarded = tuple[Event, str, str, str, int, str]


def expected_forwards(transactions: list[Forwarded]) -> dict[int, list[ForwardRow]]:
    """The rows the terminal agents need, by terminal partition, in batch order."""
    out: dict[int, list[ForwardRow]] = {}
    for event, tx_id, customer, terminal, time_ms, amount in transactions:
        message = event.message
        out.setdefault(terminal_partition(terminal.encode(), PARTITIONS), []).append(
            ForwardRow(
                message.partition,
                message.offset,
                tx_id,
                customer,
                terminal,
                time_ms,
                float(Decimal(amount)),
            )
        )
    return out


# --- the mixed batch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Valid:
    event: Event
    tx_id: str
    customer: str
    terminal: str
    time_ms: int
    amount: str


@dataclass(frozen=True)
class Bad:
    event: Event
    problem: Problem
    field: str | None


async def test_a_mixed_batch_is_scored_dead_lettered_and_stored_in_order(
    slot: ModelSlot, model: LoadedModel
) -> None:
    r = rig(slot)
    engine = OnlineEngine(DEFAULT_FEATURES)
    # Earlier history of C2 and C3, already in the customer table.
    engine.transaction(T0 - 2 * DAY, "C2", "T3", 20.0)
    engine.transaction(T0 - HOUR, "C2", "T3", 35.0)  # C2's newest event
    engine.transaction(T0 + DAY, "C3", "T4", 50.0)  # C3's newest event
    for customer in ("C2", "C3"):
        state = engine.states[Entity.CUSTOMER][customer]
        r.customers.values[(CUSTOMER_PARTITIONS[customer], customer.encode())] = state.to_bytes()
    # Terminal states as the terminal agents wrote them; T5 was never seen.
    stored_terminals = {
        "T1": terminal_state(
            (T0 - 8 * DAY, 30.0),
            (T0 - 9 * DAY, 40.0),
            (T0 - 12 * DAY, 50.0),
            frauds=((T0 - 9 * DAY, "old-fraud"),),
        ),
        "T2": terminal_state((T0 - 7 * DAY - SECOND, 5.0), (T0 - 20 * DAY, 6.0)),
        "T4": terminal_state((T0 - 7 * DAY - HOUR, 8.0)),
    }
    for terminal, state in stored_terminals.items():
        r.peek.put(terminal.encode(), state)

    now_ms = int(time.time() * 1000)
    batch = Batch(now_ms)
    valid: list[Valid] = []
    bad: list[Bad] = []

    def good(
        tx_id: str, customer: str, terminal: str, time_ms: int, amount: str, sent: bool
    ) -> None:
        data = payload(tx_id, customer, terminal, time_ms, amount)
        event = batch.add(customer, encode(data), sent_ms=now_ms - 1500 if sent else None)
        valid.append(Valid(event, tx_id, customer, terminal, time_ms, amount))

    def wrong(key: str, value: bytes, problem: Problem, field: str | None) -> None:
        bad.append(Bad(batch.add(key, value), problem, field))

    good("t1", "C1", "T1", T0, "12.50", sent=True)
    wrong("C4", b'{"tx_id": "b1", "tx_time": ', Problem.NOT_JSON, None)
    good("t2", "C2", "T1", T0 + 10 * SECOND, "2500.00", sent=False)
    wrong(
        "C4",
        encode({**payload("b2", "C4", "T1", T0), "tx_time": "yesterday"}),
        Problem.WRONG_TYPE,
        "tx_time",
    )
    good("t3", "C1", "T2", T0 + 60 * SECOND, "1999.99", sent=True)
    missing = payload("b3", "C4", "T1", T0)
    del missing["terminal_id"]
    wrong("C4", encode(missing), Problem.MISSING_FIELD, "terminal_id")
    wrong("C4", encode(payload("b4", "C4", "T1", T0, "-5.00")), Problem.BAD_VALUE, "amount")
    wrong("C4", encode(payload("b5", "C4", "T1", T0, "10000000.00")), Problem.BAD_VALUE, "amount")
    wrong(
        "C4",
        encode({**payload("b6", "C4", "T1", T0), "wallet": "x"}),
        Problem.UNKNOWN_FIELD,
        "wallet",
    )
    large = encode(payload("b7", "C4", "T1", T0))
    large += b" " * (MAX_EVENT_BYTES + 1 - len(large))  # valid JSON, but too long to read
    wrong("C4", large, Problem.TOO_LARGE, None)
    # C5's transaction keyed by C1: it must touch neither customer.
    wrong("C1", encode(payload("b8", "C5", "T1", T0)), Problem.WRONG_KEY, None)
    # More than C2's allowed lateness (1 day) behind its newest stored event (T0 - 1 h).
    late = T0 - HOUR - DAY - 1
    with pytest.raises(EventTooOldError):  # the engine agrees it is too late
        EntityWindows(DEFAULT_FEATURES, Entity.CUSTOMER).check(
            engine.states[Entity.CUSTOMER]["C2"], late
        )
    wrong("C2", encode(payload("b9", "C2", "T3", late, "3.00")), Problem.TOO_LATE, "tx_time")
    good("t5", "C3", "T4", T0, "0.00", sent=False)  # exactly 1 day behind C3: still exact
    good("t6", "C6", "T5", T0 + 5 * SECOND, "7.00", sent=True)
    events = batch.events

    await r.stage.process(as_events(events))

    assert current_event() is None
    log = r.recorder
    version = model.metadata.version

    # Reference features: the engine over the valid transactions, in order.
    expected: dict[str, Vector] = {}
    for v in valid:
        engine_vector = engine.transaction(
            v.time_ms, v.customer, v.terminal, float(v.amount), v.tx_id
        )
        stored = stored_terminals.get(v.terminal, EntityState())
        expected[v.tx_id] = expected_vector(engine_vector, stored, v.time_ms, float(v.amount))
    with pytest.raises(EventTooOldError):
        engine.transaction(late, "C2", "T3", 3.0)
    matrix = np.array([expected[v.tx_id] for v in valid])
    expected_scores = dict(
        zip(
            [v.tx_id for v in valid],
            model.estimator.predict_proba(matrix)[:, 1].tolist(),
            strict=True,
        )
    )

    # Dead letters: one per bad event, original bytes, problem and source in headers.
    dlq = log.sends(TOPICS.dlq)
    assert len(dlq) == len(bad)
    for b in bad:
        message = b.event.message
        [sent] = [
            s
            for s in dlq
            if s.header("fraudstream-source-partition") == str(message.partition).encode()
            and s.header("fraudstream-source-offset") == str(message.offset).encode()
        ]
        headers = header_dict(sent.headers)
        assert sent.value == b.event.value
        assert sent.key == b.event.key
        assert sent.partition is None
        assert headers["fraudstream-problem"] == b.problem.value.encode(), headers
        assert headers.get("fraudstream-field") == (None if b.field is None else b.field.encode())
        assert headers["fraudstream-source-topic"] == TOPICS.source.encode()
        assert "fraudstream-truncated-from" not in headers

    # Forwards: one message per terminal partition, holding that partition's valid
    # transactions in batch order, each with its source position.
    assert forwarded(log) == expected_forwards(
        [(v.event, v.tx_id, v.customer, v.terminal, v.time_ms, v.amount) for v in valid]
    )

    # Score records: one per valid transaction, with the reference features.
    scores = decoded_scores(log)
    assert sorted(scores) == sorted(v.tx_id for v in valid)
    for v in valid:
        sent, score = scores[v.tx_id]
        assert sent.key == v.customer.encode()
        assert sent.partition is None
        assert [name for name, _ in sent.headers or ()] == ["traceparent"]
        assert (score.customer_id, score.terminal_id, score.tx_time) == (
            v.customer,
            v.terminal,
            v.time_ms,
        )
        assert (score.threshold, score.model_version) == (THRESHOLD, version)
        assert score.features == dict(zip(NAMES, expected[v.tx_id], strict=True)), v.tx_id
        assert score.score == pytest.approx(expected_scores[v.tx_id], rel=1e-9, abs=1e-12)
        assert now_ms <= score.scored_at

    # Alerts: exactly the scores at or above the threshold, with reasons and latency.
    alerts = decoded_alerts(log)
    alerted = {tx for tx, (_, score) in scores.items() if score.score >= THRESHOLD}
    assert set(alerts) == alerted
    assert alerted == {"t2", "t3"}  # one with the sent-at header, one without
    by_id = {v.tx_id: v for v in valid}
    for tx_id, (sent, alert) in alerts.items():
        v = by_id[tx_id]
        score = scores[tx_id][1]
        assert sent.key == v.customer.encode()
        assert alert.alert_id == alert_id(tx_id, version)
        assert str(alert.amount) == v.amount
        assert (alert.score, alert.threshold, alert.model_version) == (
            score.score,
            THRESHOLD,
            version,
        )
        assert alert.features == score.features
        assert 1 <= len(alert.reasons) <= REASONS
        assert all(alert.features[reason.feature] == reason.value for reason in alert.reasons)
        contributions = [float(reason.contribution or 0) for reason in alert.reasons]
        assert all(c > 0 for c in contributions), alert.reasons
        assert contributions == sorted(contributions, reverse=True)
        if v.event.message.headers:
            sent_at = now_ms - 1500
        else:
            sent_at = int(v.event.message.timestamp * 1000)
        assert alert.latency_ms == alert.emitted_at - sent_at
    assert alerts["t2"][1].latency_ms >= 60_000  # from the broker timestamp, 60 s ago
    assert 1500 <= alerts["t3"][1].latency_ms < 60_000  # from the header, 1.5 s ago

    # State: every send before any write; each changed customer written once, under the
    # event that last changed it, with the engine's state.
    log.assert_sends_precede_writes()
    writes = log.writes()
    last_change = {"C1": "t3", "C2": "t2", "C3": "t5", "C6": "t6"}
    assert sorted((w.partition, w.key) for w in writes) == sorted(
        (CUSTOMER_PARTITIONS[c], c.encode()) for c in last_change
    )
    for w in writes:
        customer = w.key.decode()
        assert w.event is by_id[last_change[customer]].event
        assert w.value == engine.states[Entity.CUSTOMER][customer].to_bytes(), customer
    # Reads: the customers of valid transactions, in their own partitions, one each.
    assert sorted(r.customers.reads) == sorted(
        (CUSTOMER_PARTITIONS[c], c.encode()) for c in ("C1", "C2", "C3", "C6")
    )
    # One prefetch of the decoded customers and one peek of the batch's terminals.
    [prefetched] = r.customers.prefetched
    assert {p: set(keys) for p, keys in prefetched.items()} == {
        0: {b"C1"},
        1: {b"C2"},
        2: {b"C3"},
        4: {b"C6"},
    }
    [asked] = r.peek.asked
    assert sorted(k for keys in asked.values() for k in keys) == [b"T1", b"T2", b"T4", b"T5"]

    # Metrics.
    m = r.metrics
    assert counter(m, "fraudstream_transactions_total") == len(valid)
    assert counter(m, "fraudstream_alerts_total") == len(alerts)
    problems: dict[str, int] = {}
    for b in bad:
        problems[b.problem.value] = problems.get(b.problem.value, 0) + 1
    for problem in Problem:
        assert counter(m, "fraudstream_dlq_records_total", problem=problem.value) == problems.get(
            problem.value, 0
        ), problem
    assert counter(m, "fraudstream_batch_size_count") == 1
    assert counter(m, "fraudstream_batch_size_sum") == len(events)
    assert counter(m, "fraudstream_event_to_alert_latency_seconds_count") == len(alerts)
    assert counter(m, "fraudstream_event_to_alert_latency_seconds_sum") == pytest.approx(
        sum(a.latency_ms for _, a in alerts.values()) / 1000
    )
    assert counter(m, "fraudstream_processing_latency_seconds_count") == 1
    assert counter(m, "fraudstream_terminal_reads_inexact_total") == 0
    assert counter(m, "fraudstream_scorer_event_time_seconds") == (T0 + 60 * SECOND) / 1000


# --- other batches -----------------------------------------------------------------------------


def two_transactions(now_ms: int) -> Batch:
    batch = Batch(now_ms)
    batch.add("C1", encode(payload("s1", "C1", "T1", T0, "3000.00")), sent_ms=now_ms)
    batch.add("C6", encode(payload("s2", "C6", "T2", T0 + SECOND, "4.00")))
    return batch


async def test_without_score_records_the_rest_is_sent_and_stored(
    slot: ModelSlot,
) -> None:
    r = rig(slot, topics=replace(TOPICS, scores=None))
    batch = two_transactions(int(time.time() * 1000))

    await r.stage.process(as_events(batch.events))

    assert r.recorder.sends(TOPICS.scores) == []
    # T1 and T2 live in different terminal partitions: one forward message each.
    assert [s.topic for s in r.recorder.sends()] == [TOPICS.alerts] + [TOPICS.forwards] * 2
    first, second = batch.events
    assert forwarded(r.recorder) == expected_forwards(
        [
            (first, "s1", "C1", "T1", T0, "3000.00"),
            (second, "s2", "C6", "T2", T0 + SECOND, "4.00"),
        ]
    )
    assert set(decoded_alerts(r.recorder)) == {"s1"}
    assert [w.key for w in r.recorder.writes()] == [b"C1", b"C6"]
    r.recorder.assert_sends_precede_writes()
    assert counter(r.metrics, "fraudstream_transactions_total") == 2


async def test_forwards_hold_each_terminal_partitions_transactions_in_batch_order(
    slot: ModelSlot,
) -> None:
    r = rig(slot)
    # T2, T3 and T6 share a terminal partition, as do T5 and T8; T1 has its own.
    assert len({terminal_partition(t, PARTITIONS) for t in (b"T2", b"T3", b"T6")}) == 1
    assert len({terminal_partition(t, PARTITIONS) for t in (b"T5", b"T8")}) == 1
    assert len({terminal_partition(t, PARTITIONS) for t in (b"T1", b"T2", b"T5")}) == 3
    now_ms = int(time.time() * 1000)
    spec: list[tuple[str, str, str] | None] = [
        ("C1", "T2", "0.10"),
        ("C2", "T5", "1999.99"),
        ("C6", "T3", "9999999.99"),
        ("C1", "T1", "0.01"),
        None,  # a bad event between them: not forwarded
        ("C2", "T6", "3.00"),
        ("C1", "T8", "12.34"),
        ("C6", "T2", "0.00"),
        ("C2", "T2", "100.10"),
    ]
    batches: list[tuple[Batch, list[Forwarded]]] = []
    for round_ in range(2):
        batch = Batch(now_ms)
        if round_:  # the next batch goes on after the first one's offsets
            batch.offsets = dict(batches[-1][0].offsets)
        transactions: list[Forwarded] = []
        for i, item in enumerate(spec):
            if item is None:
                batch.add("C1", b"{not json")
                continue
            customer, terminal, amount = item
            tx_id, time_ms = f"f{round_}-{i}", T0 + (10 * round_ + i) * SECOND
            data = payload(tx_id, customer, terminal, time_ms, amount)
            event = batch.add(customer, encode(data))
            transactions.append((event, tx_id, customer, terminal, time_ms, amount))
        batches.append((batch, transactions))

    terminal_events: list[Event] = []
    for batch, transactions in batches:
        r.recorder.log.clear()
        await r.stage.process(as_events(batch.events))
        # One message per terminal partition per batch, with exactly its transactions.
        assert len(r.recorder.sends(TOPICS.forwards)) == 3
        assert len(r.recorder.sends(TOPICS.dlq)) == 1
        assert forwarded(r.recorder) == expected_forwards(transactions)
        for sent in r.recorder.sends(TOPICS.forwards):
            assert sent.partition is not None
            offset = len(terminal_events)
            message = Message(TOPICS.forwards, sent.partition, offset)
            terminal_events.append(Event(sent.key, sent.value, message))

    # The terminal agents apply what was forwarded: each terminal's transactions, once.
    terminal_recorder = Recorder()
    table = TableDouble(terminal_recorder)
    terminal_metrics = PipelineMetrics()
    stage = TerminalStage(
        windows=EntityWindows(DEFAULT_FEATURES, Entity.TERMINAL),
        table=table,
        send=terminal_recorder.send,
        dlq=TOPICS.dlq,
        metrics=terminal_metrics,
    )
    await stage.process_transactions(as_events(terminal_events))
    await stage.process_transactions(as_events(terminal_events))  # replayed: all skipped
    windows = EntityWindows(DEFAULT_FEATURES, Entity.TERMINAL)
    expected: dict[str, EntityState] = {}
    for _, transactions in batches:
        for _, _, customer, terminal, time_ms, amount in transactions:
            state = expected.setdefault(terminal, EntityState())
            windows.record(state, time_ms, float(amount), customer)
    for terminal, state in expected.items():
        partition = terminal_partition(terminal.encode(), PARTITIONS)
        assert table.values[(partition, terminal.encode())] == state.to_bytes(), terminal
    assert counter(terminal_metrics, "fraudstream_terminal_transactions_total") == 16
    assert (
        counter(terminal_metrics, "fraudstream_duplicates_skipped_total", source="transactions")
        == 16
    )
    assert terminal_recorder.sends() == []


async def test_scoring_waits_for_the_first_model(model: LoadedModel) -> None:
    slot = ModelSlot(NAMES, reasons=REASONS)
    r = rig(slot)
    batch = two_transactions(int(time.time() * 1000))
    task = asyncio.create_task(r.stage.process(as_events(batch.events)))
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout=0.1)
        assert not task.done()
        assert r.recorder.log == []
        assert r.customers.reads == []

        slot.activate(model)
        await asyncio.wait_for(task, timeout=5)
    finally:
        task.cancel()
        close(slot)
    scores = decoded_scores(r.recorder)
    assert sorted(scores) == ["s1", "s2"]
    assert {s.model_version for _, s in scores.values()} == {model.metadata.version}
    assert len(r.recorder.writes()) == 2


async def test_a_batch_of_bad_events_only_sends_dead_letters(slot: ModelSlot) -> None:
    r = rig(slot)
    batch = Batch(int(time.time() * 1000))
    batch.add("C1", None)  # a tombstone
    batch.add("C1", b"")
    batch.add("C1", b"[1, 2]")
    batch.add(None, encode(payload("x", "C1", "T1", T0)), partition=0)
    too_large = b"x" * (MAX_EVENT_BYTES + 1)
    batch.add("C1", too_large)

    await r.stage.process(as_events(batch.events))

    dlq = r.recorder.sends(TOPICS.dlq)
    assert [s.value for s in dlq] == [e.value for e in batch.events]
    assert [s.header("fraudstream-problem") for s in dlq] == [
        b"not_json",
        b"not_json",
        b"not_an_object",
        b"wrong_key",
        b"too_large",
    ]
    assert r.recorder.sends() == dlq
    assert r.recorder.writes() == []
    assert r.customers.reads == []
    assert r.customers.prefetched == []
    assert r.peek.asked == []
    assert counter(r.metrics, "fraudstream_transactions_total") == 0
    assert counter(r.metrics, "fraudstream_batch_size_sum") == 5
    assert counter(r.metrics, "fraudstream_dlq_records_total", problem="not_json") == 2


async def test_an_unreadable_customer_state_starts_afresh(slot: ModelSlot) -> None:
    r = rig(slot)
    r.customers.values[(CUSTOMER_PARTITIONS["C1"], b"C1")] = b"\x07 not a state"
    batch = two_transactions(int(time.time() * 1000))

    await r.stage.process(as_events(batch.events))

    fresh = OnlineEngine()
    expected = fresh.transaction(T0, "C1", "T1", 3000.0, "s1")
    score = decoded_scores(r.recorder)["s1"][1]
    for i in positions(Entity.CUSTOMER):
        assert score.features[NAMES[i]] == expected[i]
    written = {w.key: w.value for w in r.recorder.writes()}
    assert written[b"C1"] == fresh.states[Entity.CUSTOMER]["C1"].to_bytes()


async def test_a_terminal_state_from_an_older_feature_set_is_read_for_what_it_holds(
    slot: ModelSlot,
) -> None:
    """After an upgrade that added report times, old terminal states still score.

    The state has T1's transaction and a reported fraud but no report times: the scorer
    reads its transaction counts and risks, reads the known-fraud counts as zero, and
    counts the read as inexact, until the terminal agent rewrites the state.
    """
    r = rig(slot)
    old = EntityWindows(HANDBOOK_FEATURES, Entity.TERMINAL)
    state = EntityState()
    old.record(state, T0 - 7 * DAY, 5.0, "P0")
    assert old.record_fraud(state, T0 - 7 * DAY, "f0", T0 - 6 * DAY)
    state.layout &= ~KEEPS_REPORT_TIMES  # as written before report times were kept
    del state.fraud_reported[:]
    r.peek.put(b"T1", state.to_bytes())
    batch = two_transactions(int(time.time() * 1000))

    await r.stage.process(as_events(batch.events))

    features = decoded_scores(r.recorder)["s1"][1].features
    assert features["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1
    assert features["TERMINAL_ID_RISK_1DAY_WINDOW"] == 1.0
    assert features["TERMINAL_ID_NB_KNOWN_FRAUDS_28DAY_WINDOW"] == 0
    assert counter(r.metrics, "fraudstream_terminal_reads_inexact_total") == 1


async def test_an_unreadable_terminal_state_does_not_fail_the_batch(slot: ModelSlot) -> None:
    r = rig(slot)
    r.peek.put(b"T1", b"\x07 not a state")
    batch = two_transactions(int(time.time() * 1000))

    await r.stage.process(as_events(batch.events))

    assert sorted(decoded_scores(r.recorder)) == ["s1", "s2"]
    assert len(r.recorder.writes()) == 2


# --- hostile input: duplicates, future events, misplaced records, odd headers ----------------


def routed_rig(slot: ModelSlot, now_ms: int) -> Rig:
    """A rig whose stage checks partitions (by murmur2) and time against ``now_ms``."""
    r = rig(slot)
    r.stage.intake = Intake(
        partitions=PARTITIONS,
        max_ahead_ms=300_000,
        send=r.recorder.send,
        metrics=r.metrics,
        clock=lambda: now_ms / 1000,
    )
    return r


def home(customer: str) -> int:
    return terminal_partition(customer.encode(), PARTITIONS)


async def test_a_transaction_delivered_twice_is_scored_and_counted_once(slot: ModelSlot) -> None:
    r = rig(slot)
    batch = Batch(int(time.time() * 1000))
    batch.add("C1", encode(payload("d1", "C1", "T1", T0, "3000.00")))
    batch.add("C1", encode(payload("d1", "C1", "T1", T0, "3000.00")))  # the same bytes again
    batch.add("C1", encode(payload("d2", "C1", "T1", T0 + SECOND, "5.00")))
    await r.stage.process(as_events(batch.events))
    # And once more in a later batch, as a producer retry after a timeout would.
    later = Batch(int(time.time() * 1000))
    later.add("C1", encode(payload("d1", "C1", "T1", T0, "3000.00")))
    await r.stage.process(as_events(later.events))

    assert sorted(decoded_scores(r.recorder)) == ["d1", "d2"]
    assert len(r.recorder.sends(TOPICS.alerts)) == 1
    assert r.recorder.sends(TOPICS.dlq) == []
    assert counter(r.metrics, "fraudstream_duplicates_skipped_total", source="scorer") == 2
    d2 = decoded_scores(r.recorder)["d2"][1]
    assert d2.features["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2.0


async def test_an_id_reused_with_another_amount_is_a_conflicting_duplicate(
    slot: ModelSlot,
) -> None:
    r = rig(slot)
    batch = Batch(int(time.time() * 1000))
    first = batch.add("C1", encode(payload("d1", "C1", "T1", T0, "3000.00")))
    second = batch.add("C1", encode(payload("d1", "C1", "T1", T0, "3001.00")))
    await r.stage.process(as_events(batch.events))

    alerts = decoded_alerts(r.recorder)
    assert alerts["d1"][1].amount == Decimal("3000.00")  # the first one's, only
    (dead,) = r.recorder.sends(TOPICS.dlq)
    assert dead.value == second.value
    assert dead.header("fraudstream-problem") == b"conflicting_duplicate"
    assert dead.header("fraudstream-source-offset") == str(second.message.offset).encode()
    assert first.message.offset != second.message.offset


async def test_an_event_from_the_future_moves_no_clock(slot: ModelSlot) -> None:
    """One transaction dated 2099 must not make every later real one too late."""
    now_ms = T0 + DAY
    r = routed_rig(slot, now_ms)
    batch = Batch(now_ms)
    future = batch.add(
        "C1", encode(payload("f1", "C1", "T1", 4_102_444_799_000)), partition=home("C1")
    )
    ahead = batch.add(
        "C1", encode(payload("f2", "C1", "T1", now_ms + 301_000)), partition=home("C1")
    )
    batch.add("C1", encode(payload("ok", "C1", "T1", now_ms + 299_000)), partition=home("C1"))
    await r.stage.process(as_events(batch.events))
    later = Batch(now_ms)
    later.add("C1", encode(payload("real", "C1", "T1", T0 + 20 * HOUR)), partition=home("C1"))
    await r.stage.process(as_events(later.events))

    dead = r.recorder.sends(TOPICS.dlq)
    assert [d.value for d in dead] == [future.value, ahead.value]
    assert {d.header("fraudstream-problem") for d in dead} == {b"future_event"}
    assert {d.header("fraudstream-field") for d in dead} == {b"tx_time"}
    assert sorted(decoded_scores(r.recorder)) == ["ok", "real"]
    assert counter(r.metrics, "fraudstream_dlq_records_total", problem="too_late") == 0


async def test_a_record_on_the_wrong_partition_is_rerouted_unchanged_with_its_headers(
    slot: ModelSlot,
) -> None:
    """librdkafka's default partitioner (CRC32) puts keys elsewhere than murmur2 does."""
    now_ms = int(time.time() * 1000)
    r = routed_rig(slot, now_ms)
    wrong = (home("C1") + 1) % PARTITIONS
    batch = Batch(now_ms)
    stray = batch.add("C1", encode(payload("w1", "C1", "T1", T0)), partition=wrong)
    stray.message.headers = [("traceparent", b"00-abc-01"), ("\udcfe\udcff", None)]  # type: ignore[list-item]
    batch.add("C1", encode(payload("w2", "C1", "T1", T0 + SECOND)), partition=home("C1"))
    await r.stage.process(as_events(batch.events))

    (moved,) = r.recorder.sends(TOPICS.source)
    assert (moved.key, moved.value, moved.partition) == (b"C1", stray.value, home("C1"))
    assert moved.headers == [
        ("traceparent", b"00-abc-01"),
        ("\\xfe\\xff", None),
        ("fraudstream-rerouted-from", f"{TOPICS.source}/{wrong}/{stray.message.offset}".encode()),
    ]
    assert sorted(decoded_scores(r.recorder)) == ["w2"]  # w1 is scored where it belongs
    assert counter(r.metrics, "fraudstream_records_rerouted_total", topic=TOPICS.source) == 1

    # Where it lands, it is scored like any other.
    again = Batch(now_ms)
    copy = again.add("C1", moved.value, partition=home("C1"))
    copy.message.headers = list(moved.headers or ())
    await r.stage.process(as_events(again.events))
    assert sorted(decoded_scores(r.recorder)) == ["w1", "w2"]


async def test_a_rerouted_record_still_misplaced_is_dead_lettered_not_sent_round(
    slot: ModelSlot,
) -> None:
    r = routed_rig(slot, int(time.time() * 1000))
    batch = Batch(int(time.time() * 1000))
    stray = batch.add(
        "C1", encode(payload("w1", "C1", "T1", T0)), partition=(home("C1") + 1) % PARTITIONS
    )
    stray.message.headers = [("fraudstream-rerouted-from", b"transactions/0/1")]
    await r.stage.process(as_events(batch.events))
    (dead,) = r.recorder.sends()
    assert dead.topic == TOPICS.dlq
    assert dead.header("fraudstream-problem") == b"wrong_partition"


@pytest.mark.parametrize(
    "sent",
    [None, b"", b"0", b"abc", b"9" * 5000, "١٢٣".encode(), b"4102444800000"],
    ids=["null", "empty", "zero", "letters", "5000-digits", "arabic-digits", "2100"],
)
async def test_any_sent_at_header_gives_a_plausible_latency(
    slot: ModelSlot, sent: bytes | None
) -> None:
    r = rig(slot)
    now_ms = int(time.time() * 1000)
    batch = Batch(now_ms)
    event = batch.add("C1", encode(payload("s1", "C1", "T1", T0, "3000.00")))
    event.message.headers = [(SENT_AT_HEADER, sent)]  # type: ignore[list-item]
    event.message.timestamp = T0 / 1000  # a replay's broker timestamp: the event time
    await r.stage.process(as_events(batch.events))

    (alert,) = [a for _, a in decoded_alerts(r.recorder).values()]
    assert 0 <= alert.latency_ms < 60_000
    assert counter(r.metrics, "fraudstream_event_to_alert_latency_seconds_sum") < 60


async def test_a_dead_letter_keeps_the_input_headers_and_survives_a_lone_surrogate(
    slot: ModelSlot,
) -> None:
    r = rig(slot)
    batch = Batch(int(time.time() * 1000))
    bad = batch.add("C1", b'{"x\\ud800": 1, "tx_id": "t"}')
    bad.message.headers = [("traceparent", b"00-1-01"), ("fraudstream-problem", b"stale")]
    good = batch.add("C1", encode(payload("g1", "C1", "T1", T0)))
    await r.stage.process(as_events(batch.events))

    (dead,) = r.recorder.sends(TOPICS.dlq)
    assert dead.value == bad.value
    assert (dead.headers or [])[0] == ("traceparent", b"00-1-01")
    assert dead.header("fraudstream-problem") == b"missing_field"
    assert [name for name, _ in dead.headers or []].count("fraudstream-problem") == 1
    assert sorted(decoded_scores(r.recorder)) == ["g1"]
    assert [w.key for w in r.recorder.writes()] == [good.key]


# --- fuzz: whatever a batch holds, every record is accounted for and nothing raises ----------

_IDS = st.sampled_from(["C1", "C2", "C6", "T1", "T2", "x"])
_TRANSACTIONS = st.builds(
    payload,
    st.sampled_from(["t1", "t2", "t3"]),
    _IDS,
    _IDS,
    st.integers(T0 - 3 * DAY, T0 + 3 * DAY),
    st.sampled_from(["1.00", "3000.00", "9999999.99"]),
)


_HEADERS = st.lists(
    st.tuples(
        st.sampled_from([SENT_AT_HEADER, "traceparent", "fraudstream-rerouted-from"])
        | st.text(max_size=6),
        st.none() | st.binary(max_size=12) | st.integers(0, 2**45).map(lambda i: str(i).encode()),
    ),
    max_size=3,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.none() | _IDS | st.text(max_size=4),
            hostile_values(_TRANSACTIONS),
            st.integers(0, PARTITIONS - 1),
            _HEADERS,
        ),
        min_size=1,
        max_size=12,
    )
)
def test_any_batch_is_scored_rerouted_skipped_or_dead_lettered_and_never_raises(
    slot: ModelSlot,
    records: list[tuple[str | None, bytes | None, int, list[tuple[str, bytes | None]]]],
) -> None:
    now_ms = T0 + DAY
    r = routed_rig(slot, now_ms)
    batch = Batch(now_ms)
    for key, value, partition, headers in records:
        event = batch.add(key, value, partition=partition)
        event.message.headers = headers  # type: ignore[assignment]

    asyncio.run(r.stage.process(as_events(batch.events)))

    m = r.metrics
    scored = counter(m, "fraudstream_transactions_total")
    dead = sum(counter(m, "fraudstream_dlq_records_total", problem=p.value) for p in Problem)
    rerouted = counter(m, "fraudstream_records_rerouted_total", topic=TOPICS.source)
    repeated = counter(m, "fraudstream_duplicates_skipped_total", source="scorer")
    assert scored + dead + rerouted + repeated == len(records)
    assert len(r.recorder.sends(TOPICS.dlq)) == dead
    assert len(decoded_scores(r.recorder)) <= scored
    for sent in r.recorder.sends():
        for name, _ in sent.headers or ():
            name.encode()  # every header name can be sent: strict UTF-8


async def test_alerts_and_scores_carry_the_transactions_trace_as_a_child(slot: ModelSlot) -> None:
    r = rig(slot)
    batch = Batch(int(time.time() * 1000))
    traced = batch.add("C1", encode(payload("a1", "C1", "T1", T0, "3000.00")))
    parent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced.message.headers = [("traceparent", parent)]
    batch.add("C6", encode(payload("a2", "C6", "T2", T0, "3000.00")))  # no trace: a new one
    await r.stage.process(as_events(batch.events))

    alerts = decoded_alerts(r.recorder)
    scores = decoded_scores(r.recorder)
    for sent in (alerts["a1"][0], scores["a1"][0]):
        child = sent.header("traceparent")
        assert child is not None
        assert child[:36] == parent[:36]
        assert child[36:52] != parent[36:52]
    fresh = alerts["a2"][0].header("traceparent")
    assert fresh is not None
    assert fresh[3:35] != parent[3:35]


async def test_forward_rows_carry_their_transactions_trace_to_the_terminals_dead_letters(
    slot: ModelSlot,
) -> None:
    r = rig(slot)
    now_ms = int(time.time() * 1000)
    batch = Batch(now_ms)
    trace_id = b"4bf92f3577b34da6a3ce929d0e0e4736"
    parents = {
        "a": b"00-" + trace_id + b"-00f067aa0ba902b7-01",
        "c": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
    }
    # tx_id -> (customer, terminal, headers besides the send time)
    spec: dict[str, tuple[str, str, list[tuple[str, bytes | None]]]] = {
        "a": ("C1", "T1", [("traceparent", parents["a"])]),
        "b": ("C2", "T1", []),  # no trace
        "c": ("C3", "T1", [("other", b"x"), ("traceparent", parents["c"])]),
        "d": ("C4", "T1", [("traceparent", b"00-not-a-trace-01")]),  # invalid: none
        "e": ("C1", "T2", [("traceparent", parents["a"])]),  # another terminal partition
        "f": ("C5", "T2", [("traceparent", None)]),
    }
    for i, (tx_id, (customer, terminal, extra)) in enumerate(spec.items()):
        event = batch.add(customer, encode(payload(tx_id, customer, terminal, T0 + i * SECOND)))
        headers: Any = [(SENT_AT_HEADER, str(now_ms).encode()), *extra]  # None values too
        event.message.headers = headers
    batch.add("C6", encode(payload("g", "C6", "T2", T0)), sent_ms=None)  # no headers at all

    await r.stage.process(as_events(batch.events))

    forwards = r.recorder.sends(TOPICS.forwards)
    assert len(forwards) == 2
    traces: dict[str, bytes | None] = {}
    for sent in forwards:
        assert sent.headers is None  # the message itself: no transaction's trace is its own
        message = decode_forward_message(sent.value)
        assert not isinstance(message, DecodeError)
        for index, row in enumerate(message.rows):
            traces[row.tx_id] = message.traces.get(index)
    assert traces == {
        "a": parents["a"],
        "b": None,
        "c": parents["c"],
        "d": None,
        "e": parents["a"],
        "f": None,
        "g": None,
    }

    # A terminal agent that finds the rows too late dead-letters each with a child of the
    # transaction's trace; rows without one get no traceparent.
    terminal_recorder = Recorder()
    table = TableDouble(terminal_recorder)
    windows = EntityWindows(DEFAULT_FEATURES, Entity.TERMINAL)
    ahead = EntityState()
    windows.record(ahead, T0 + windows.retention_ms + DAY, 1.0, "C9")
    for terminal_id in (b"T1", b"T2"):
        table.values[(terminal_partition(terminal_id, PARTITIONS), terminal_id)] = ahead.to_bytes()
    stage = TerminalStage(
        windows=windows,
        table=table,
        send=terminal_recorder.send,
        dlq=TOPICS.dlq,
        metrics=PipelineMetrics(),
    )
    events = [
        Event(None, sent.value, Message(TOPICS.forwards, sent.partition or 0, offset))
        for offset, sent in enumerate(forwards)
    ]
    await stage.process_transactions(as_events(events))
    dead = {
        json.loads(sent.value or b"")["tx_id"]: header_dict(sent.headers)
        for sent in terminal_recorder.sends(TOPICS.dlq)
    }
    assert sorted(dead) == [*sorted(spec), "g"]
    for tx_id, dead_headers in dead.items():
        assert dead_headers["fraudstream-problem"] == b"too_late"
        parent = traces[tx_id]
        if parent is None:
            assert "traceparent" not in dead_headers, tx_id
            continue
        child = dead_headers["traceparent"]
        assert child[3:35] == parent[3:35]  # the transaction's trace id
        assert child[52:] == parent[52:]
        assert child[36:52] != parent[36:52]
    assert dead["a"]["traceparent"][3:35] == trace_id


# --- terminal watermarks ----------------------------------------------------------------------


#: How far behind a read the terminal partitions must have applied forwards.
LAG = TerminalNeeds.of(DEFAULT_FEATURES).forwards_lag_ms or 0


def watermarked_rig(slot: ModelSlot, max_wait_s: float = 5.0) -> Rig:
    """A rig whose scorer waits for terminal watermarks and declares its own."""
    r = rig(slot)
    r.stage.gate = WatermarkGate(
        TerminalWatermarks(r.peek, PARTITIONS, mark_key),
        TerminalNeeds.of(DEFAULT_FEATURES),
        max_wait_s=max_wait_s,
        observe_wait=r.metrics.watermark_wait.observe,
    )
    r.stage.clock = SourceClock(DAY)
    return r


def terminals_applied(peek: PeekStore, forwards_ms: int, reports_ms: int) -> None:
    """Every terminal partition: sources declared at ``forwards_ms``, reports to ``reports_ms``."""
    for p in range(PARTITIONS):
        entries = peek.entries.setdefault(p, {})
        for source in range(PARTITIONS):
            entries[mark_key(p, source)] = SourceMark(0, forwards_ms).to_bytes()
        entries[report_key(p)] = ReportMark(reports_ms).to_bytes()


def declared(recorder: Recorder) -> list[tuple[int, int, dict[int, int]]]:
    """(partition, rows, declarations) of each forward message sent."""
    out = []
    for sent in recorder.sends(TOPICS.forwards):
        message = decode_forward_message(sent.value)
        assert not isinstance(message, DecodeError)
        assert sent.partition is not None
        out.append((sent.partition, len(message.rows), message.watermarks))
    return out


async def test_transactions_are_held_per_source_partition_until_their_terminal_reads_are_final(
    slot: ModelSlot,
) -> None:
    r = watermarked_rig(slot)
    terminals_applied(r.peek, T0 - LAG, T0)  # final for reads up to T0
    batch = Batch(T0)
    batch.add("C1", encode(payload("a1", "C1", "T1", T0 - SECOND)))
    batch.add("C2", encode(payload("b1", "C2", "T2", T0 + 2 * HOUR)))
    batch.add("C1", encode(payload("a2", "C1", "T3", T0)))
    batch.add("C2", encode(payload("b2", "C2", "T4", T0 - HOUR)))  # behind b1 in its partition

    await r.stage.process(as_events(batch.events))

    assert [w.key for w in r.recorder.writes()] == [b"C1"]  # partition 0 went ahead
    c1, c2 = CUSTOMER_PARTITIONS["C1"], CUSTOMER_PARTITIONS["C2"]
    forwards = declared(r.recorder)
    rows = [f for f in forwards if f[1]]
    assert sum(n for _, n, _ in rows) == 2
    assert all(wm == {c1: T0 - DAY} for _, _, wm in rows)
    # Then every terminal partition hears how far partition 1 is: its newest held
    # transaction less the lateness (below b2, the earliest held one).
    ticks = forwards[len(rows) :]
    assert sorted(p for p, _, _ in ticks) == list(range(PARTITIONS))
    assert all(n == 0 and wm == {c2: T0 + 2 * HOUR - DAY} for _, n, wm in ticks)

    # The next batch: C1 goes on, C2's new transaction queues behind the held ones.
    second = Batch(T0)
    second.offsets = dict(batch.offsets)
    second.add("C1", encode(payload("a3", "C1", "T1", T0)))
    second.add("C2", encode(payload("b3", "C2", "T4", T0 - HOUR)))
    await r.stage.process(as_events(second.events))
    assert [w.key for w in r.recorder.writes()] == [b"C1", b"C1"]
    assert len(declared(r.recorder)) == len(forwards) + 1  # one more forward, no new tick

    await r.stage.release_held()  # nothing final yet: nothing moves
    assert [w.key for w in r.recorder.writes()] == [b"C1", b"C1"]

    terminals_applied(r.peek, T0 + 2 * HOUR - LAG, T0 + HOUR)
    await r.stage.release_held()

    assert [w.key for w in r.recorder.writes()] == [b"C1", b"C1", b"C2"]
    scored = [json.loads(s.value or b"")["tx_id"] for s in r.recorder.sends(TOPICS.scores)]
    assert scored == ["a1", "a2", "a3", "b1", "b2", "b3"]
    last = [f for f in declared(r.recorder)[len(forwards) + 1 :] if f[1]]
    assert all(wm == {c2: T0 + 2 * HOUR - DAY} for _, _, wm in last)
    assert counter(r.metrics, "fraudstream_terminal_watermark_wait_seconds_count") == 1
    assert counter(r.metrics, "fraudstream_terminal_reads_inexact_total") == 0
    assert r.stage.clock is not None
    assert r.stage.clock.watermark(c2) == T0 + 2 * HOUR - DAY


async def test_a_transaction_held_too_long_is_scored_and_counted_inexact(slot: ModelSlot) -> None:
    r = watermarked_rig(slot, max_wait_s=0.05)
    terminals_applied(r.peek, T0 - LAG, T0)
    batch = Batch(T0)
    batch.add("C1", encode(payload("a1", "C1", "T1", T0)))
    batch.add("C2", encode(payload("b1", "C2", "T2", T0 + DAY)))

    await r.stage.process(as_events(batch.events))
    assert set(decoded_scores(r.recorder)) == {"a1"}
    await asyncio.sleep(0.06)
    await r.stage.release_held()

    assert set(decoded_scores(r.recorder)) == {"a1", "b1"}
    assert counter(r.metrics, "fraudstream_terminal_reads_inexact_total") == 1


async def test_a_hold_does_not_time_out_while_kafka_or_redis_is_down(slot: ModelSlot) -> None:
    # The watermarks cannot move during an outage: scoring after the time limit there
    # read terminal state that was not final (a broker-outage test, one run in two).
    r = watermarked_rig(slot, max_wait_s=0.05)
    down = True
    r.stage.unavailable = lambda: down
    terminals_applied(r.peek, T0 - LAG, T0)
    batch = Batch(T0)
    batch.add("C2", encode(payload("b1", "C2", "T2", T0 + DAY)))
    await r.stage.process(as_events(batch.events))
    for _ in range(4):  # the outage lasts longer than the time limit
        await asyncio.sleep(0.03)
        await r.stage.release_held()
    assert decoded_scores(r.recorder) == {}

    down = False  # the limit counts from here
    await r.stage.release_held()
    assert decoded_scores(r.recorder) == {}
    await asyncio.sleep(0.06)
    await r.stage.release_held()
    assert set(decoded_scores(r.recorder)) == {"b1"}
    assert counter(r.metrics, "fraudstream_terminal_reads_inexact_total") == 1


async def test_held_transactions_are_dropped_at_a_rebalance_and_their_partition_waits_for_them(
    slot: ModelSlot,
) -> None:
    r = watermarked_rig(slot)
    terminals_applied(r.peek, T0 - LAG, T0)
    generation = 1
    r.stage.generation = lambda: generation
    batch = Batch(T0)
    held = batch.add("C2", encode(payload("b1", "C2", "T2", T0 + DAY)))
    await r.stage.process(as_events(batch.events))

    generation = 2  # the partitions are read again from the stored offsets
    terminals_applied(r.peek, T0 + 2 * DAY - LAG, T0 + 2 * DAY)
    await r.stage.release_held()
    # Still on its way from before the seek: a later transaction of b1's partition.
    stale = Batch(T0)
    stale.offsets = dict(batch.offsets)
    stale.add("C2", encode(payload("b2", "C2", "T2", T0 + DAY + 1)))
    stale.add("C1", encode(payload("a1", "C1", "T1", T0)))  # another partition goes on
    await r.stage.process(as_events(stale.events))
    assert set(decoded_scores(r.recorder)) == {"a1"}

    # After the seek: b1 again, then b2 again, in order.
    await r.stage.process(as_events([held, stale.events[0]]))
    scored = [json.loads(s.value or b"")["tx_id"] for s in r.recorder.sends(TOPICS.scores)]
    assert scored == ["a1", "b1", "b2"]


async def test_a_transaction_waits_for_the_reports_its_partition_held_when_it_was_sent(
    slot: ModelSlot,
) -> None:
    r = watermarked_rig(slot)
    terminals_applied(r.peek, T0 - LAG, T0 - 30 * DAY)  # no report that late applied
    reads = []

    async def ends() -> dict[int, int]:
        reads.append(time.time())
        return dict.fromkeys(range(PARTITIONS), 5)

    r.stage.report_ends = ReportEnds(ends, HOUR)

    def applied_to(offset: int) -> None:
        for p in range(PARTITIONS):
            r.peek.entries[p][report_key(p)] = ReportMark(T0 - 30 * DAY, offset).to_bytes()

    applied_to(4)  # one report of the partition's five not applied yet
    batch = Batch(T0)
    batch.add("C1", encode(payload("a1", "C1", "T1", T0)), sent_ms=int(time.time() * 1000))
    await r.stage.process(as_events(batch.events))
    assert decoded_scores(r.recorder) == {}

    applied_to(5)
    await r.stage.release_held()

    assert set(decoded_scores(r.recorder)) == {"a1"}
    assert len(reads) == 1  # the reading taken after it was sent is kept for it
    assert counter(r.metrics, "fraudstream_terminal_watermark_wait_seconds_count") == 1


def rebalanced_while_reading_ends(slot: ModelSlot) -> Rig:
    """A rig whose transactions wait for the reports' ends, and a rebalance begins
    (generation 1 -> 2) while the broker answers the first reading."""
    r = watermarked_rig(slot)
    terminals_applied(r.peek, T0 - LAG, T0 - 30 * DAY)  # the reports are what it waits for
    generation = 1
    r.stage.generation = lambda: generation

    async def ends() -> dict[int, int]:
        nonlocal generation
        generation = 2
        return dict.fromkeys(range(PARTITIONS), 0)

    r.stage.report_ends = ReportEnds(ends, HOUR)
    return r


async def test_a_rebalance_during_a_release_writes_no_state_for_the_transactions_read_again(
    slot: ModelSlot,
) -> None:
    # Faust's revocation waits for the batch an agent holds, not for the release task:
    # one that was reading the reports' ends when a rebalance began scored its held
    # transactions after the stores had flushed and the partitions had been sought back
    # to them, so their state ran ahead of the offsets they are read again from (a
    # catch-up test: 1,686 transactions dead-lettered too_late, one run in two).
    r = rebalanced_while_reading_ends(slot)
    batch = Batch(T0)
    batch.add("C1", encode(payload("a1", "C1", "T1", T0)), sent_ms=int(time.time() * 1000))
    await r.stage.process(as_events(batch.events))
    assert r.recorder.writes() == []

    await r.stage.release_held()

    assert r.recorder.writes() == []  # read again from the stored offset, counted once
    assert counter(r.metrics, "fraudstream_transactions_total") == 0


async def test_a_card_whose_transaction_was_scored_unwritten_at_a_rebalance_waits_for_it(
    slot: ModelSlot,
) -> None:
    # Faust resumes the flow and the partitions a loop turn before its seek runs: a
    # fetch made before the rebalance hands over what follows the transactions scored
    # while it began, whose state was not written. Scored then, the next ones read cards
    # without those (a catch-up with a worker SIGKILLed: 28,842 features differed from
    # the offline engine's).
    r = rebalanced_while_reading_ends(slot)
    sent = int(time.time() * 1000)
    batch = Batch(T0)
    first = batch.add("C1", encode(payload("a1", "C1", "T1", T0)), sent_ms=sent)
    await r.stage.process(as_events(batch.events))
    await r.stage.release_held()
    assert r.recorder.writes() == []  # a1 was scored as the rebalance began: not written

    # Handed over before the seek: the card's next transaction.
    stale = Batch(T0)
    stale.offsets = dict(batch.offsets)
    stale.add("C1", encode(payload("a2", "C1", "T1", T0)), sent_ms=sent)
    await r.stage.process(as_events(stale.events))
    await r.stage.release_held()

    # After the seek: a1 again, then a2, which counts it.
    await r.stage.process(as_events([first, stale.events[0]]))
    await r.stage.release_held()
    scores = [decode_score(s.value) for s in r.recorder.sends(TOPICS.scores)]
    read = [
        (s.tx_id, s.features["CUSTOMER_ID_NB_TX_1DAY_WINDOW"])
        for s in scores
        if isinstance(s, Score)
    ]
    assert read == [
        ("a1", 1.0),
        ("a1", 1.0),
        ("a2", 2.0),
    ]


async def test_an_agent_waiting_for_room_among_the_held_returns_when_a_rebalance_begins(
    slot: ModelSlot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Faust's revocation waits for the agent's batch to be acknowledged, and the held
    # transactions may wait for a killed worker's terminal partitions, which only the
    # rebalance moves: waiting for room until the time limit held both (a 244k
    # catch-up with a worker SIGKILLed scored 113,161 reads inexactly).
    monkeypatch.setattr(score_module, "HELD_MAX", 1)
    r = watermarked_rig(slot, max_wait_s=30.0)
    terminals_applied(r.peek, T0 - LAG, T0)
    generation = 1
    r.stage.generation = lambda: generation
    batch = Batch(T0)
    batch.add("C2", encode(payload("b1", "C2", "T2", T0 + DAY)))
    batch.add("C2", encode(payload("b2", "C2", "T2", T0 + DAY + 1)))

    processing = asyncio.create_task(r.stage.process(as_events(batch.events)))
    await asyncio.sleep(0.2)
    assert not processing.done()  # two held, room for one: the agent waits
    generation = 2  # a rebalance begins
    await asyncio.wait_for(processing, timeout=1.0)

    assert decoded_scores(r.recorder) == {}  # read again from the stored offsets
    assert counter(r.metrics, "fraudstream_terminal_reads_inexact_total") == 0


async def test_held_sources_declare_at_most_every_few_hundredths_but_a_new_one_at_once(
    slot: ModelSlot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A round per batch was a message to every terminal partition per batch: at live
    # pace, as many messages on the forwards topic as the forwards themselves.
    r = watermarked_rig(slot)
    terminals_applied(r.peek, T0 - LAG, T0)  # final for reads up to T0: later ones wait
    now = 1000.0
    monkeypatch.setattr(time, "monotonic", lambda: now)  # the module reads time.monotonic
    c1, c2 = CUSTOMER_PARTITIONS["C1"], CUSTOMER_PARTITIONS["C2"]

    def ticks() -> list[dict[int, int]]:
        return [wm for _, rows, wm in declared(r.recorder) if not rows]

    batch = Batch(T0)
    batch.add("C2", encode(payload("b1", "C2", "T2", T0 + DAY)))
    await r.stage.process(as_events(batch.events))
    assert ticks() == [{c2: T0}] * PARTITIONS  # declared for the first time: at once

    more = Batch(T0)
    more.offsets = dict(batch.offsets)
    more.add("C2", encode(payload("b2", "C2", "T2", T0 + 2 * DAY)))  # moves c2's declaration
    await r.stage.process(as_events(more.events))
    assert len(ticks()) == PARTITIONS  # declared lately: held back

    now += score_module.DECLARE_EVERY_S
    await r.stage.release_held()  # nothing final; the held-back declaration goes now
    assert ticks()[PARTITIONS:] == [{c2: T0 + DAY - 1}] * PARTITIONS

    other = Batch(T0)
    other.offsets = dict(more.offsets)
    other.add("C1", encode(payload("a1", "C1", "T1", T0 + DAY)))  # a source not declared yet
    await r.stage.process(as_events(other.events))
    assert ticks()[2 * PARTITIONS :] == [{c1: T0, c2: T0 + DAY - 1}] * PARTITIONS
