"""Event values as JSON, built by polars expressions from dataset columns.

Building a record per row and encoding it (``Contract.encode``) costs microseconds per
event in Python, a large share of the replay's budget at 50,000 events/s. ``json_object``
writes the same bytes for a whole batch of rows at once, in polars' threads.

It is derived from the event's contract (``streams.contracts``): the JSON object has the
contract's fields in the record's order, and each field's text is chosen by the field's
rule (`json_fragment`): a string for a pattern rule, the two-decimal string ``money()``
writes for an amount, an integer for times and versions, ``null`` for a missing optional
value; a field with a default that has no column is written as its default. A contract
with a rule that has no polars form here (numbers, feature maps, nested records: their
float formatting is orjson's) cannot be encoded this way, and says so at once. Strings are
written without escaping: every string rule's pattern admits only characters JSON needs
no escape for (letters, digits, ``_ . : -``), and the dataset reader checks every value
against those patterns first. ``tests/unit/streams/test_replay_encoding.py`` generates
rows from the contracts' rules and compares each row's bytes with ``Contract.encode``.

The expressions expect validated columns (``features.dataset.DatasetReader`` checks them):
on a value the contract refuses, the output is unspecified (usually null).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from streams.contracts import (
    Contract,
    EpochMillisRule,
    FieldRule,
    MoneyRule,
    NonNegativeIntRule,
    PatternRule,
    SchemaVersionRule,
)


def json_string(value: pl.Expr) -> pl.Expr:
    """A JSON string of a value that needs no escaping (checked by a contract pattern)."""
    return pl.concat_str(pl.lit('"'), value, pl.lit('"'))


def json_integer(value: pl.Expr) -> pl.Expr:
    """A JSON integer from an integer column."""
    return value.cast(pl.String)


def cents(amount: pl.Expr) -> pl.Expr:
    """An amount in the major unit as an integer number of cents (exact for valid amounts)."""
    return (amount * 100).round(0).cast(pl.Int64, strict=False)  # null where not finite


def json_money(amount: pl.Expr) -> pl.Expr:
    """A JSON decimal string with exactly two decimals, as ``money()`` writes it."""
    whole = cents(amount)
    return json_string(
        pl.concat_str(
            (whole // 100).cast(pl.String),
            pl.lit("."),
            (whole % 100).cast(pl.String).str.zfill(2),
        )
    )


def json_fragment(rule: FieldRule, value: pl.Expr, *, nullable: bool) -> pl.Expr:
    """The JSON text of a field's values, as its rule writes them.

    Args:
        rule: The field's rule in its contract.
        value: The field's values: strings for pattern rules, integers for times and
            versions, float amounts in whole cents for money.
        nullable: The field is optional: a null value is written ``null``.

    Raises:
        TypeError: The rule has no polars form here.
    """
    if isinstance(rule, MoneyRule):
        text = json_money(value)
    elif isinstance(rule, PatternRule):
        text = json_string(value)
    elif isinstance(rule, EpochMillisRule | NonNegativeIntRule | SchemaVersionRule):
        text = json_integer(value)
    else:
        raise TypeError(f"{type(rule).__name__} has no polars JSON encoding")
    if nullable:
        return pl.when(value.is_null()).then(pl.lit("null")).otherwise(text)
    return text


def json_object(contract: Contract[Any], columns: Mapping[str, pl.Expr]) -> pl.Expr:
    """One JSON object per row, byte for byte what ``contract.encode`` writes for its record.

    Args:
        contract: The event's contract: its fields, their order and rules.
        columns: Per field, an expression of its values. A field with a default (the
            schema version, optional fields) may be left out: it is written as its default.

    Returns:
        A Binary expression: the UTF-8 JSON text.

    Raises:
        TypeError: ``columns`` names a field the record does not have, leaves out one
            without a default, or a field's rule has no polars form (`json_fragment`).
    """
    unknown = set(columns) - set(contract.fields)
    missing = [
        field
        for field in contract.fields
        if field not in columns and field not in contract.defaults
    ]
    if unknown or missing:
        raise TypeError(
            f"{contract.title} fields {contract.fields} and columns {tuple(columns)} differ: "
            f"unknown {sorted(unknown)}, missing {missing}"
        )
    parts: list[pl.Expr] = []
    for index, field in enumerate(contract.fields):
        parts.append(pl.lit(("{" if index == 0 else ",") + f'"{field}":'))
        value = columns.get(field)
        if value is None:
            default = contract.defaults[field]
            value = pl.lit(None, pl.String) if default is None else pl.lit(default)
        parts.append(
            json_fragment(contract.rules[field], value, nullable=field in contract.optional)
        )
    parts.append(pl.lit("}"))
    return pl.concat_str(parts).cast(pl.Binary)
