"""Replay's vectorised JSON is, row for row, the bytes the contract encoder writes.

The rows are generated from the contracts' own rules (a pattern rule's values from its
pattern, amounts in whole cents, times in the contract's range, optional fields null or
not), so a field added to a contract is covered here without a change.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.dataset import is_whole_cents
from streams.contracts import (
    ALERT,
    FRAUD_REPORT,
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    SCORE,
    TRANSACTION,
    Contract,
    EpochMillisRule,
    FieldRule,
    MoneyRule,
    NonNegativeIntRule,
    PatternRule,
    SchemaVersionRule,
)
from streams.records import SCHEMA_VERSION, Transaction, money
from streams.replay import encoding

cents = st.integers(0, 10**9 - 1)  # the contract: below ten million

#: The contracts the replay encodes with polars.
REPLAYED: list[Contract[Any]] = [TRANSACTION, FRAUD_REPORT]


def _values(rule: FieldRule) -> tuple[st.SearchStrategy[Any], pl.DataType]:
    """Valid values of a field by its rule, as a dataset column holds them, and their type."""
    if isinstance(rule, MoneyRule):
        return cents.map(lambda c: c / 100), pl.Float64()
    if isinstance(rule, PatternRule):
        return st.from_regex(f"^{rule.pattern}$", fullmatch=True), pl.String()
    if isinstance(rule, EpochMillisRule):
        return st.integers(MIN_EPOCH_MS, MAX_EPOCH_MS), pl.Int64()
    if isinstance(rule, NonNegativeIntRule):
        return st.integers(0, 2**53), pl.Int64()
    if isinstance(rule, SchemaVersionRule):
        return st.integers(1, SCHEMA_VERSION), pl.Int64()
    raise AssertionError(f"no values for {type(rule).__name__}")


def _rows(contract: Contract[Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Rows of a frame with a column for each field (schema_version: left out or not)."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field, rule in contract.rules.items():
        values, _ = _values(rule)
        fields[field] = st.none() | values if field in contract.optional else values
    drop = st.sampled_from([(), ("schema_version",)])
    return st.tuples(st.lists(st.fixed_dictionaries(fields), min_size=1, max_size=20), drop).map(
        lambda rows_drop: [
            {k: v for k, v in row.items() if k not in rows_drop[1]} for row in rows_drop[0]
        ]
    )


def _encode(contract: Contract[Any], rows: list[dict[str, Any]]) -> list[bytes]:
    schema = {field: _values(contract.rules[field])[1] for field in rows[0]}
    frame = pl.DataFrame(rows, schema=schema)
    columns = {field: pl.col(field) for field in rows[0]}
    encoded: list[bytes] = (
        frame.select(encoding.json_object(contract, columns)).to_series().to_list()
    )
    return encoded


@pytest.mark.parametrize("contract", REPLAYED, ids=[c.name for c in REPLAYED])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_each_row_encodes_to_the_contract_encoders_bytes(
    contract: Contract[Any], data: st.DataObject
) -> None:
    rows = data.draw(_rows(contract))
    for row, value in zip(rows, _encode(contract, rows), strict=True):
        assert value == contract.encode(contract.record(**row))


@pytest.mark.parametrize(
    "amount", [0.0, 0.01, 0.1, 0.5, 5.0, 57.16, 58.66, 99.99, 1e6 + 0.99, 9999999.99]
)
def test_edge_amounts_encode_like_money(amount: float) -> None:
    row: dict[str, Any] = {
        "tx_id": "1",
        "tx_time": MIN_EPOCH_MS,
        "customer_id": "C1",
        "terminal_id": "T1",
        "amount": amount,
        "currency": "EUR",
    }
    assert _encode(TRANSACTION, [row]) == [TRANSACTION.encode(Transaction(**row))]


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


def test_the_columns_must_be_the_records_fields() -> None:
    with pytest.raises(TypeError, match=r"missing \['tx_time'"):
        encoding.json_object(TRANSACTION, {"tx_id": pl.col("tx_id")})
    fields = {field: pl.col(field) for field in FRAUD_REPORT.fields}
    with pytest.raises(TypeError, match=r"unknown \['wallet'\]"):
        encoding.json_object(FRAUD_REPORT, {**fields, "wallet": pl.col("wallet")})


@pytest.mark.parametrize("contract", [ALERT, SCORE], ids=["alert", "score"])
def test_events_with_numbers_have_no_polars_encoding(contract: Contract[Any]) -> None:
    with pytest.raises(TypeError, match="NumberRule has no polars JSON encoding"):
        encoding.json_object(contract, {field: pl.col(field) for field in contract.fields})
