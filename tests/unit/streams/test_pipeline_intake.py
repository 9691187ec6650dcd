"""Intake.admit: the checks both agents make of their input, in one order, for any event kind."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from pipeline_doubles import Event, Message, Recorder, Sent, as_events

from streams.contracts import FRAUD_REPORT, TRANSACTION, Problem
from streams.metrics import PipelineMetrics
from streams.pipeline.intake import REROUTED_FROM_HEADER, EventKind, Intake
from streams.pipeline.score import TRANSACTIONS
from streams.pipeline.terminal import REPORTS
from streams.pipeline.terminals import terminal_partition
from streams.records import FraudReport, Transaction

PARTITIONS = 6
NOW_S = 1_700_000_000.0
AHEAD_MS = 300_000
MAX_BYTES = 1024


def transaction(customer: str = "C1", tx_time: int = 1_600_000_000_000) -> bytes:
    return TRANSACTION.encode(
        Transaction(
            tx_id=f"T-{customer}-{tx_time}",
            tx_time=tx_time,
            customer_id=customer,
            terminal_id="TERM1",
            amount=Decimal("12.50"),
            currency="EUR",
        )
    )


def home(key: bytes) -> int:
    return terminal_partition(key, PARTITIONS)


def event(
    value: bytes | None,
    *,
    key: bytes | None = b"C1",
    partition: int | None = None,
    offset: int = 0,
    headers: list[tuple[str, bytes]] | None = None,
) -> Event:
    if partition is None:
        partition = home(key) if key is not None else 0
    return Event(key, value, Message("transactions", partition, offset, headers))


def intake(recorder: Recorder) -> Intake:
    return Intake(
        partitions=PARTITIONS,
        max_ahead_ms=AHEAD_MS,
        send=recorder.send,
        metrics=PipelineMetrics(),
        clock=lambda: NOW_S,
    )


async def test_each_record_is_admitted_or_rejected_by_its_first_failing_check() -> None:
    recorder = Recorder()
    future_ms = int(NOW_S * 1000) + AHEAD_MS + 1
    wrong = (home(b"C1") + 1) % PARTITIONS
    events = [
        event(transaction()),  # admitted
        event(b"x" * (MAX_BYTES + 1), offset=1),  # too large, never read
        event(b"{not json", offset=2),
        event(transaction("C2", future_ms), key=b"C1", offset=3),  # key before time
        event(transaction(tx_time=future_ms), partition=wrong, offset=4),  # re-routed first
        event(
            transaction(),
            partition=wrong,
            offset=5,
            headers=[(REROUTED_FROM_HEADER, b"transactions/0/9")],
        ),
        event(transaction(tx_time=future_ms), offset=6),
        event(transaction(tx_time=future_ms - 1), offset=7),  # at the horizon: admitted
    ]
    admitted, rejected = await intake(recorder).admit(as_events(events), TRANSACTIONS, MAX_BYTES)

    assert [(e.message.offset, tx.customer_id) for e, tx in admitted] == [(0, "C1"), (7, "C1")]
    problems = {e.message.offset: (p.problem, p.field) for e, p in rejected}
    assert problems == {
        1: (Problem.TOO_LARGE, None),
        2: (Problem.NOT_JSON, None),
        3: (Problem.WRONG_KEY, None),
        5: (Problem.WRONG_PARTITION, None),
        6: (Problem.FUTURE_EVENT, "tx_time"),
    }
    (sent,) = [s for s in recorder.log if isinstance(s, Sent)]
    assert (sent.topic, sent.key, sent.partition) == ("transactions", b"C1", home(b"C1"))
    assert sent.value == events[4].value
    assert sent.header(REROUTED_FROM_HEADER) == f"transactions/{wrong}/4".encode()


def report() -> bytes:
    return FRAUD_REPORT.encode(
        FraudReport(
            tx_id="T1",
            customer_id="C1",
            terminal_id="TERM1",
            tx_time=1_600_000_000_000,
            reported_at=1_600_000_001_000,
        )
    )


@pytest.mark.parametrize(
    ("kind", "value", "says"),
    [
        (TRANSACTIONS, transaction, "is not the customer_id"),
        (REPORTS, report, "must be keyed by terminal_id"),
    ],
    ids=["transactions", "reports"],
)
async def test_a_wrong_key_names_the_id_its_topic_is_keyed_by(
    kind: EventKind[Any], value: Callable[[], bytes], says: str
) -> None:
    records = [event(value(), key=b"SOMEONE-ELSE")]
    admitted, rejected = await intake(Recorder()).admit(as_events(records), kind, MAX_BYTES)
    assert admitted == []
    ((_, problem),) = rejected
    assert problem.problem is Problem.WRONG_KEY, problem
    assert says in problem.reason
