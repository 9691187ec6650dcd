"""Event records: plain frozen dataclasses, exact amounts on the wire, stable alert ids."""

from __future__ import annotations

import dataclasses
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.contracts import ALERT, FRAUD_REPORT, TRANSACTION
from streams.records import (
    ALERT_ID_NAMESPACE,
    SCHEMA_VERSION,
    Alert,
    AlertReason,
    FraudReport,
    Score,
    Transaction,
    alert_id,
    money,
)


def transaction(**changes: object) -> Transaction:
    fields: dict[str, Any] = {
        "tx_id": "42",
        "tx_time": 1_522_540_800_000,
        "customer_id": "C0001",
        "terminal_id": "T0002",
        "amount": Decimal("57.16"),
        "currency": "EUR",
    }
    fields.update(changes)
    return Transaction(**fields)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (57.16, "57.16"),
        (12.3, "12.30"),
        (0, "0.00"),
        (7, "7.00"),
        ("0.5", "0.50"),
        (Decimal("1E+1"), "10.00"),
        (1234567.89, "1234567.89"),
    ],
)
def test_money_is_exact_cents(value: float | str | Decimal, expected: str) -> None:
    assert str(money(value)) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0.1 + 0.2, "more than two decimal places"),  # 0.30000000000000004
        (1.15 * 3, "more than two decimal places"),  # 3.4499999999999997, not rounded
        (-1.0, "negative"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("twelve", "decimal number"),
        (True, "number"),
    ],
)
def test_money_refuses_noise_negative_and_non_numbers(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        money(value)  # type: ignore[arg-type]  # deliberately wrong types among them


def test_transaction_json_carries_amount_as_decimal_string_without_metadata() -> None:
    payload = json.loads(TRANSACTION.encode(transaction(amount=12.3)))
    assert payload["amount"] == "12.30"
    assert payload["schema_version"] == SCHEMA_VERSION
    assert "__faust" not in payload
    assert list(payload) == [
        "tx_id",
        "tx_time",
        "customer_id",
        "terminal_id",
        "amount",
        "currency",
        "schema_version",
        "channel",
        "merchant_category",
        "country",
    ]


def test_record_refuses_an_amount_with_float_noise() -> None:
    with pytest.raises(ValueError, match="more than two decimal places"):
        transaction(amount=1.1 * 3)  # 3.3000000000000003


def test_records_are_plain_frozen_dataclasses() -> None:
    for record in (Transaction, FraudReport, AlertReason, Alert, Score):
        assert dataclasses.is_dataclass(record)
        assert record.__mro__ == (record, object)  # no Faust, no base class at all
    tx = transaction()
    with pytest.raises(dataclasses.FrozenInstanceError):
        tx.tx_id = "43"  # type: ignore[misc]  # what is refused
    assert dataclasses.replace(tx, amount=Decimal("1.5")).amount == Decimal("1.50")


def test_a_transaction_round_trips_with_a_decimal_amount() -> None:
    original = transaction(channel="pos", country="FR")
    restored = TRANSACTION.decode(TRANSACTION.encode(original))
    assert restored == original
    assert isinstance(restored, Transaction)
    assert isinstance(restored.amount, Decimal)


def test_fraud_report_round_trips() -> None:
    report = FraudReport(
        tx_id="42",
        customer_id="C0001",
        terminal_id="T0002",
        tx_time=1_522_540_800_000,
        reported_at=1_522_540_900_000,
    )
    assert FRAUD_REPORT.decode(FRAUD_REPORT.encode(report)) == report


def test_alert_id_is_uuid5_of_tx_id_and_model_version() -> None:
    expected = uuid.uuid5(ALERT_ID_NAMESPACE, "42\x00rf-2024-01")
    assert alert_id("42", "rf-2024-01") == str(expected)
    assert alert_id("42", "rf-2024-01") == alert_id("42", "rf-2024-01")
    assert alert_id("42", "rf-2024-02") != alert_id("42", "rf-2024-01")
    # The separator keeps the name unambiguous: ("4", "2rf") is not ("42", "rf").
    assert alert_id("4", "2rf") != alert_id("42", "rf")
    assert uuid.UUID(alert_id("42", "v1")).version == 5


@given(st.text(), st.text())
def test_alert_id_is_what_the_uuid_module_gives(tx_id: str, model_version: str) -> None:
    expected = uuid.uuid5(ALERT_ID_NAMESPACE, f"{tx_id}\x00{model_version}")
    assert alert_id(tx_id, model_version) == str(expected)


def test_an_alert_is_plain_json_with_an_exact_amount() -> None:
    alert = Alert(
        alert_id=alert_id("42", "v7"),
        tx_id="42",
        customer_id="C0001",
        terminal_id="T0002",
        amount=57.16,  # type: ignore[arg-type]  # a float becomes exact cents
        currency="EUR",
        tx_time=1_522_540_800_000,
        score=0.93,
        threshold=0.5,
        model_version="v7",
        reasons=[AlertReason(feature="TX_AMOUNT", value=57.16, contribution=0.4)],
        features={"TX_AMOUNT": 57.16, "TX_DURING_NIGHT": 0.0},
        emitted_at=1_700_000_000_000,
        latency_ms=12,
    )
    assert alert.amount == Decimal("57.16")
    payload = json.loads(ALERT.encode(alert))
    assert payload["amount"] == "57.16"
    assert payload["reasons"] == [{"feature": "TX_AMOUNT", "value": 57.16, "contribution": 0.4}]
    assert "__faust" not in json.dumps(payload)
