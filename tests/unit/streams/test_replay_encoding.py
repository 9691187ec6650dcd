"""Replay's vectorised JSON is byte for byte what the record encoder writes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.dataset import is_whole_cents
from streams.contracts import (
    CURRENCY_PATTERN,
    FRAUD_REPORT,
    ID_PATTERN,
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    TRANSACTION,
    PatternRule,
    decode_fraud_report,
    decode_transaction,
)
from streams.records import FraudReport, Transaction, money
from streams.replay import encoding

ids = st.from_regex(f"^{ID_PATTERN}$", fullmatch=True)
times = st.integers(MIN_EPOCH_MS, MAX_EPOCH_MS)
cents = st.integers(0, 10**9 - 1)  # the contract: below ten million


def _optional(field: str) -> st.SearchStrategy[str | None]:
    rule = TRANSACTION.rules[field]
    assert isinstance(rule, PatternRule)
    return st.none() | st.from_regex(f"^{rule.pattern}$", fullmatch=True)


transactions = st.fixed_dictionaries(
    {
        "tx_id": ids,
        "tx_time": times,
        "customer_id": ids,
        "terminal_id": ids,
        "amount": cents.map(lambda c: c / 100),
        "currency": st.from_regex(f"^{CURRENCY_PATTERN}$", fullmatch=True),
        "channel": _optional("channel"),
        "merchant_category": _optional("merchant_category"),
        "country": _optional("country"),
    }
)


def _encode_transactions(rows: list[dict[str, Any]]) -> list[bytes]:
    frame = pl.DataFrame(
        rows,
        schema={
            "tx_id": pl.String,
            "tx_time": pl.Int64,
            "customer_id": pl.String,
            "terminal_id": pl.String,
            "amount": pl.Float64,
            "currency": pl.String,
            "channel": pl.String,
            "merchant_category": pl.String,
            "country": pl.String,
        },
    )
    value = encoding.transaction_value(
        tx_id=pl.col("tx_id"),
        tx_time_ms=pl.col("tx_time"),
        customer_id=pl.col("customer_id"),
        terminal_id=pl.col("terminal_id"),
        amount=pl.col("amount"),
        currency=pl.col("currency"),
        channel=pl.col("channel"),
        merchant_category=pl.col("merchant_category"),
        country=pl.col("country"),
    )
    encoded: list[bytes] = frame.select(value).to_series().to_list()
    return encoded


@settings(max_examples=300, deadline=None)
@given(st.lists(transactions, min_size=1, max_size=20))
def test_transactions_encode_to_the_record_encoders_bytes(rows: list[dict[str, Any]]) -> None:
    encoded = _encode_transactions(rows)
    for row, value in zip(rows, encoded, strict=True):
        assert value == TRANSACTION.encode(Transaction(**row))
        assert isinstance(decode_transaction(value), Transaction)


@pytest.mark.parametrize(
    "amount", [0.0, 0.01, 0.1, 0.5, 5.0, 57.16, 58.66, 99.99, 1e11 + 0.99, 999999999999.99]
)
def test_edge_amounts_encode_like_money(amount: float) -> None:
    row: dict[str, Any] = {
        "tx_id": "1",
        "tx_time": MIN_EPOCH_MS,
        "customer_id": "C1",
        "terminal_id": "T1",
        "amount": amount,
        "currency": "EUR",
        "channel": None,
        "merchant_category": None,
        "country": None,
    }
    assert _encode_transactions([row]) == [TRANSACTION.encode(Transaction(**row))]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e12, exclude_max=True), min_size=1))
def test_the_whole_cents_rule_is_moneys_rule(amounts: list[float]) -> None:
    frame = pl.DataFrame({"amount": amounts}, schema={"amount": pl.Float64})
    checked = frame.select(
        ok=is_whole_cents(pl.col("amount")), text=encoding.json_money(pl.col("amount"))
    )
    for amount, ok, text in zip(amounts, checked["ok"], checked["text"], strict=True):
        try:
            expected: Decimal | None = money(amount)
        except ValueError:
            expected = None
        assert ok == (expected is not None), amount
        if expected is not None:
            assert text == f'"{expected}"'


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(ids, ids, ids, times, st.integers(0, 10**10)).filter(
            lambda r: r[3] + r[4] <= MAX_EPOCH_MS
        ),
        min_size=1,
        max_size=20,
    )
)
def test_fraud_reports_encode_to_the_record_encoders_bytes(
    rows: list[tuple[str, str, str, int, int]],
) -> None:
    frame = pl.DataFrame(
        [(tx, c, t, time, time + delay) for tx, c, t, time, delay in rows],
        schema=["tx_id", "customer_id", "terminal_id", "tx_time", "reported_at"],
        orient="row",
    )
    value = encoding.fraud_report_value(
        tx_id=pl.col("tx_id"),
        customer_id=pl.col("customer_id"),
        terminal_id=pl.col("terminal_id"),
        tx_time_ms=pl.col("tx_time"),
        reported_at_ms=pl.col("reported_at"),
    )
    for row, encoded in zip(
        frame.iter_rows(named=True), frame.select(value).to_series(), strict=True
    ):
        assert encoded == FRAUD_REPORT.encode(FraudReport(**row))
        assert isinstance(decode_fraud_report(encoded), FraudReport)


def test_an_encoding_must_name_every_record_field() -> None:
    with pytest.raises(TypeError, match="Transaction fields"):
        encoding.json_object(TRANSACTION, {"tx_id": pl.lit('"1"')})
