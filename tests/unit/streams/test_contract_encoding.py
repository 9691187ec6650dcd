"""The contracts' encoders: one canonical JSON per event, derived from the field rules.

``Contract.encode`` (a record) and ``Contract.encode_fields`` (field values, the workers'
hot path) write the same bytes, which decode to the record again; they are the bytes
fraudstream has always written for each event kind (``WIRE``). Before the records stopped
being Faust records, a test here compared ``Contract.encode`` with Faust's
``Record.dumps()`` and with the workers' former dict builders on the same generated
records (commit "#19 contracts: one encoder per event").
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.explain import Reason
from streams.contracts import (
    ALERT,
    ALERT_REASON,
    CURRENCY_PATTERN,
    FRAUD_REPORT,
    ID_PATTERN,
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    SCORE,
    TRANSACTION,
    Contract,
    PatternRule,
    RecordListRule,
)
from streams.pipeline.outputs import alert_value, score_value
from streams.records import Alert, AlertReason, FraudReport, Score, Transaction, alert_id

ids = st.from_regex(f"^{ID_PATTERN}$", fullmatch=True)
times = st.integers(MIN_EPOCH_MS, MAX_EPOCH_MS)
amounts = st.decimals(min_value=0, max_value=Decimal("9999999.99"), places=2)
unit = st.floats(min_value=0.0, max_value=1.0)
finite = st.floats(allow_nan=False, allow_infinity=False)
feature_names = st.from_regex(r"^[A-Za-z0-9_.:-]{1,128}$", fullmatch=True)
#: Feature map keys may be any text of 1-128 characters: quotes, controls, non-ASCII.
feature_maps = st.dictionaries(st.text(min_size=1, max_size=128), finite, max_size=30)


def _optional(contract: Contract[Any], field: str) -> st.SearchStrategy[str | None]:
    rule = contract.rules[field]
    assert isinstance(rule, PatternRule)
    return st.none() | st.from_regex(f"^{rule.pattern}$", fullmatch=True)


transactions = st.builds(
    Transaction,
    tx_id=ids,
    tx_time=times,
    customer_id=ids,
    terminal_id=ids,
    amount=amounts,
    currency=st.from_regex(f"^{CURRENCY_PATTERN}$", fullmatch=True),
    channel=_optional(TRANSACTION, "channel"),
    merchant_category=_optional(TRANSACTION, "merchant_category"),
    country=_optional(TRANSACTION, "country"),
)
fraud_reports = st.builds(
    lambda tx_id, customer_id, terminal_id, tx_time, delay: FraudReport(
        tx_id=tx_id,
        customer_id=customer_id,
        terminal_id=terminal_id,
        tx_time=tx_time,
        reported_at=min(tx_time + delay, MAX_EPOCH_MS),
    ),
    ids,
    ids,
    ids,
    times,
    st.integers(0, 10**10),
)
reasons = st.builds(
    AlertReason, feature=feature_names, value=finite, contribution=st.none() | finite
)
model_versions = ids


@st.composite
def alerts(draw: st.DrawFn) -> Alert:
    tx_id = draw(ids)
    version = draw(model_versions)
    threshold, score = sorted(draw(st.tuples(unit, unit)))
    return Alert(
        alert_id=alert_id(tx_id, version),
        tx_id=tx_id,
        customer_id=draw(ids),
        terminal_id=draw(ids),
        amount=draw(amounts),
        currency="EUR",
        tx_time=draw(times),
        score=score,
        threshold=threshold,
        model_version=version,
        reasons=draw(st.lists(reasons, max_size=8)),
        features=draw(feature_maps),
        emitted_at=draw(times),
        latency_ms=draw(st.integers(0, 2**53)),
    )


scores = st.builds(
    Score,
    tx_id=ids,
    customer_id=ids,
    terminal_id=ids,
    tx_time=times,
    score=unit,
    threshold=unit,
    model_version=model_versions,
    features=feature_maps,
    scored_at=times,
)

#: Every event kind: its contract and records of it.
EVENTS: list[tuple[Contract[Any], st.SearchStrategy[Any]]] = [
    (TRANSACTION, transactions),
    (FRAUD_REPORT, fraud_reports),
    (ALERT, alerts()),
    (SCORE, scores),
]
events = st.one_of([st.tuples(st.just(contract), records) for contract, records in EVENTS])


def _values(contract: Contract[Any], record: Any) -> dict[str, Any]:
    return {field: getattr(record, field) for field in contract.fields}


@settings(max_examples=400, deadline=None)
@given(events)
def test_an_encoded_record_decodes_to_itself(event: tuple[Contract[Any], Any]) -> None:
    contract, record = event
    assert contract.decode(contract.encode(record)) == record


@settings(max_examples=400, deadline=None)
@given(events)
def test_encoding_fields_writes_what_encoding_their_record_writes(
    event: tuple[Contract[Any], Any],
) -> None:
    contract, record = event
    assert contract.encode_fields(**_values(contract, record)) == contract.encode(record)


@settings(max_examples=200, deadline=None)
@given(reasons)
def test_a_nested_reason_is_encoded_by_its_own_contract(reason: AlertReason) -> None:
    assert ALERT_REASON.decode(ALERT_REASON.encode(reason)) == reason
    alert_reasons = ALERT.rules["reasons"]
    assert isinstance(alert_reasons, RecordListRule)
    assert alert_reasons.contract is ALERT_REASON


#: One event of each kind and the bytes fraudstream has always written for it (what Faust's
#: ``Record.dumps()`` wrote while the records were Faust records, and the workers' encoders
#: before the contracts had theirs): compact, the record's field order, null for None,
#: amounts as decimal strings, non-ASCII as UTF-8.
WIRE: list[tuple[Contract[Any], Any, bytes]] = [
    (
        TRANSACTION,
        Transaction(
            tx_id="tx-1",
            tx_time=1_718_031_234_567,
            customer_id="C42",
            terminal_id="T7",
            amount=Decimal("12.3"),
            currency="EUR",
            channel="ecommerce",
            country="FR",
        ),
        b'{"tx_id":"tx-1","tx_time":1718031234567,"customer_id":"C42","terminal_id":"T7",'
        b'"amount":"12.30","currency":"EUR","schema_version":1,"channel":"ecommerce",'
        b'"merchant_category":null,"country":"FR"}',
    ),
    (
        FRAUD_REPORT,
        FraudReport(
            tx_id="tx-1",
            customer_id="C42",
            terminal_id="T7",
            tx_time=1_718_031_234_567,
            reported_at=1_718_117_634_567,
        ),
        b'{"tx_id":"tx-1","customer_id":"C42","terminal_id":"T7","tx_time":1718031234567,'
        b'"reported_at":1718117634567,"schema_version":1}',
    ),
    (
        ALERT,
        Alert(
            alert_id=alert_id("tx-1", "v3"),
            tx_id="tx-1",
            customer_id="C42",
            terminal_id="T7",
            amount=Decimal("12.30"),
            currency="EUR",
            tx_time=1_718_031_234_567,
            score=0.9375,
            threshold=0.5,
            model_version="v3",
            reasons=[
                AlertReason(feature="amount_ratio_1d", value=4.5, contribution=0.25),
                AlertReason(feature="TX_DURING_NIGHT", value=1.0),
            ],
            features={"amount_ratio_1d": 4.5, "TX_DURING_NIGHT": 1.0, 'é "q"': -1e-7},
            emitted_at=1_718_031_234_600,
            latency_ms=33,
        ),
        b'{"alert_id":"3116fe92-61f3-5e1b-90b7-f070a8168ce6","tx_id":"tx-1","customer_id":"C42",'
        b'"terminal_id":"T7","amount":"12.30","currency":"EUR","tx_time":1718031234567,'
        b'"score":0.9375,"threshold":0.5,"model_version":"v3","reasons":[{"feature":'
        b'"amount_ratio_1d","value":4.5,"contribution":0.25},{"feature":"TX_DURING_NIGHT",'
        b'"value":1.0,"contribution":null}],"features":{"amount_ratio_1d":4.5,'
        b'"TX_DURING_NIGHT":1.0,"\xc3\xa9 \\"q\\"":-1e-7},"emitted_at":1718031234600,'
        b'"latency_ms":33,"schema_version":1}',
    ),
    (
        SCORE,
        Score(
            tx_id="tx-1",
            customer_id="C42",
            terminal_id="T7",
            tx_time=1_718_031_234_567,
            score=0.125,
            threshold=0.5,
            model_version="v3",
            features={"amount_ratio_1d": 4.5},
            scored_at=1_718_031_234_600,
        ),
        b'{"tx_id":"tx-1","customer_id":"C42","terminal_id":"T7","tx_time":1718031234567,'
        b'"score":0.125,"threshold":0.5,"model_version":"v3","features":{"amount_ratio_1d":4.5},'
        b'"scored_at":1718031234600,"schema_version":1}',
    ),
]


@pytest.mark.parametrize(("contract", "record", "wire"), WIRE, ids=[c.name for c, _, _ in WIRE])
def test_every_event_kind_is_written_as_it_always_was(
    contract: Contract[Any], record: Any, wire: bytes
) -> None:
    assert contract.encode(record) == wire
    assert contract.encode_fields(**_values(contract, record)) == wire
    assert contract.decode(wire) == record


def _transaction_of(record: Alert | Score) -> Transaction:
    return Transaction(
        tx_id=record.tx_id,
        tx_time=record.tx_time,
        customer_id=record.customer_id,
        terminal_id=record.terminal_id,
        amount=getattr(record, "amount", Decimal("1.00")),
        currency=getattr(record, "currency", "EUR"),
    )


@settings(max_examples=300, deadline=None)
@given(alerts())
def test_the_workers_alert_bytes_are_the_contract_encoders(alert: Alert) -> None:
    raw = alert_value(
        _transaction_of(alert),
        score=alert.score,
        threshold=alert.threshold,
        model_version=alert.model_version,
        reasons=[Reason(r.feature, r.value, r.contribution) for r in alert.reasons],  # type: ignore[arg-type]  # a null contribution too
        features=alert.features,
        emitted_at=alert.emitted_at,
        latency_ms=alert.latency_ms,
    )
    assert raw == ALERT.encode(alert)


@settings(max_examples=300, deadline=None)
@given(scores)
def test_the_workers_score_bytes_are_the_contract_encoders(score: Score) -> None:
    raw = score_value(
        _transaction_of(score),
        score=score.score,
        threshold=score.threshold,
        model_version=score.model_version,
        features=score.features,
        scored_at=score.scored_at,
    )
    assert raw == SCORE.encode(score)
