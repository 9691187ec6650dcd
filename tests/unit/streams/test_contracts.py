"""The decoding edge: every bad-input class gets a clear reason, good input a record.

Each bad case is also held against the published JSON Schema: what the decoder refuses, a
consumer validating with the schema refuses too (except the few cross-field rules that
JSON Schema cannot express, marked ``schema_can_tell=False``).
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs; comes with nbformat

from streams.contracts import (
    ALERT,
    FRAUD_REPORT,
    PUBLISHED,
    TRANSACTION,
    Contract,
    DecodeError,
    IdRule,
    Problem,
    decode_alert,
    decode_fraud_report,
    decode_transaction,
)
from streams.records import Alert, AlertReason, FraudReport, Transaction, alert_id
from streams.schemas import json_schema

TX_TIME = 1_522_540_800_000

GOOD_TRANSACTION: dict[str, Any] = {
    "tx_id": "1754154",
    "tx_time": TX_TIME,
    "customer_id": "C4999",
    "terminal_id": "T9999",
    "amount": "123.45",
    "currency": "EUR",
    "schema_version": 1,
    "channel": "ecommerce",
    "merchant_category": "5411",
    "country": "FR",
}
GOOD_REPORT: dict[str, Any] = {
    "tx_id": "1754154",
    "customer_id": "C4999",
    "terminal_id": "T9999",
    "tx_time": TX_TIME,
    "reported_at": TX_TIME + 3_600_000,
    "schema_version": 1,
}
GOOD_ALERT: dict[str, Any] = {
    "alert_id": alert_id("1754154", "v3"),
    "tx_id": "1754154",
    "customer_id": "C4999",
    "terminal_id": "T9999",
    "amount": "123.45",
    "currency": "EUR",
    "tx_time": TX_TIME,
    "score": 0.91,
    "threshold": 0.5,
    "model_version": "v3",
    "reasons": [{"feature": "TX_AMOUNT", "value": 123.45, "contribution": 0.3}],
    "features": {"TX_AMOUNT": 123.45, "TX_DURING_NIGHT": 1.0},
    "emitted_at": TX_TIME + 25,
    "latency_ms": 25,
    "schema_version": 1,
}
GOOD_SCORE: dict[str, Any] = {
    "tx_id": "1754154",
    "customer_id": "C4999",
    "terminal_id": "T9999",
    "tx_time": TX_TIME,
    "score": 0.12,
    "threshold": 0.5,
    "model_version": "v3",
    "features": {"TX_AMOUNT": 123.45, "TX_DURING_NIGHT": 1.0},
    "scored_at": TX_TIME + 25,
    "schema_version": 1,
}
GOOD = {
    "transaction": GOOD_TRANSACTION,
    "fraud-report": GOOD_REPORT,
    "alert": GOOD_ALERT,
    "score": GOOD_SCORE,
}


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def changed(base: dict[str, Any], **changes: Any) -> bytes:
    """The base event with fields replaced; a value of ``...`` removes the field."""
    payload = {**base, **changes}
    return encode({k: v for k, v in payload.items() if v is not ...})


def schema_accepts(contract: Contract[Any], raw: bytes) -> bool:
    try:
        payload = json.loads(raw)
    except ValueError:
        return False
    return bool(Draft202012Validator(json_schema(contract)).is_valid(payload))


# --- good input ------------------------------------------------------------------------


def test_good_transaction_decodes_to_the_record_built_the_ordinary_way() -> None:
    decoded = decode_transaction(encode(GOOD_TRANSACTION))
    expected = Transaction(**{**GOOD_TRANSACTION, "amount": Decimal("123.45")})
    assert isinstance(decoded, Transaction)
    assert decoded == expected
    assert dataclasses.asdict(decoded) == dataclasses.asdict(expected)
    assert vars(decoded) == vars(expected)  # built without __init__, the same fields
    assert TRANSACTION.encode(decoded) == TRANSACTION.encode(expected)
    assert decoded.amount == Decimal("123.45")
    assert isinstance(decoded.amount, Decimal)


def test_good_alert_decodes_with_nested_reasons_and_features() -> None:
    decoded = decode_alert(encode(GOOD_ALERT))
    assert isinstance(decoded, Alert)
    reason = decoded.reasons[0]
    assert isinstance(reason, AlertReason)
    assert (reason.feature, reason.value, reason.contribution) == ("TX_AMOUNT", 123.45, 0.3)
    assert decoded.features == {"TX_AMOUNT": 123.45, "TX_DURING_NIGHT": 1.0}
    ordinary = Alert(
        **{
            **GOOD_ALERT,
            "amount": Decimal("123.45"),
            "reasons": [AlertReason(feature="TX_AMOUNT", value=123.45, contribution=0.3)],
        }
    )
    assert decoded == ordinary
    assert vars(decoded) == vars(ordinary)
    assert vars(decoded.reasons[0]) == vars(ordinary.reasons[0])
    assert ALERT.encode(decoded) == ALERT.encode(ordinary)


def test_good_fraud_report_decodes() -> None:
    decoded = decode_fraud_report(encode(GOOD_REPORT))
    assert decoded == FraudReport(**GOOD_REPORT)


def test_decoded_records_are_frozen_like_records_built_the_ordinary_way() -> None:
    decoded = decode_transaction(encode(GOOD_TRANSACTION))
    assert isinstance(decoded, Transaction)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.amount = Decimal("1.00")  # type: ignore[misc]  # what is refused
    assert hash(decoded) == hash(Transaction(**{**GOOD_TRANSACTION, "amount": Decimal("123.45")}))


def test_a_contract_needs_a_frozen_dataclass_without_slots_and_a_rule_per_field() -> None:
    @dataclasses.dataclass(frozen=True)
    class Pair:
        left: str
        right: str | None = None

    @dataclasses.dataclass(frozen=True, slots=True)
    class SlottedPair:
        left: str

    @dataclasses.dataclass
    class MutablePair:
        left: str

    rules = {"left": IdRule("Left."), "right": IdRule("Right.")}
    contract = Contract(Pair, "pair", rules)
    assert (contract.fields, contract.required, contract.optional) == (
        ("left", "right"),
        ("left",),
        frozenset({"right"}),
    )
    assert contract.decode(b'{"left": "a"}') == Pair("a")
    assert contract.encode(Pair("a")) == b'{"left":"a","right":null}'
    with pytest.raises(TypeError, match="fields"):
        Contract(Pair, "pair", {"right": rules["right"], "left": rules["left"]})
    with pytest.raises(TypeError, match="slots"):
        Contract(SlottedPair, "pair", {"left": rules["left"]})
    with pytest.raises(TypeError, match="frozen dataclass"):
        Contract(MutablePair, "pair", {"left": rules["left"]})


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_good_event_is_valid_against_its_schema_and_round_trips(name: str) -> None:
    contract = PUBLISHED[name]
    raw = encode(GOOD[name])
    assert schema_accepts(contract, raw)
    record = contract.decode(raw)
    assert not isinstance(record, DecodeError), record
    assert contract.decode(contract.encode(record)) == record
    assert schema_accepts(contract, contract.encode(record))


def test_optional_fields_may_be_absent_or_null() -> None:
    raw = changed(GOOD_TRANSACTION, channel=..., merchant_category=None, country=...)
    decoded = decode_transaction(raw)
    assert isinstance(decoded, Transaction)
    assert (decoded.channel, decoded.merchant_category, decoded.country) == (None, None, None)
    assert schema_accepts(TRANSACTION, raw)


def test_newer_additive_versions_and_unknown_fields_are_accepted() -> None:
    raw = changed(GOOD_TRANSACTION, schema_version=2, wallet="apple_pay")
    decoded = decode_transaction(raw)
    assert isinstance(decoded, Transaction)
    assert decoded.schema_version == 2
    assert "wallet" not in vars(decoded)
    assert schema_accepts(TRANSACTION, raw)


def test_integral_json_numbers_count_as_integers_as_json_schema_says() -> None:
    raw = changed(GOOD_TRANSACTION, tx_time=float(TX_TIME))
    decoded = decode_transaction(raw)
    assert isinstance(decoded, Transaction)
    assert decoded.tx_time == TX_TIME
    assert type(decoded.tx_time) is int
    assert schema_accepts(TRANSACTION, raw)


def test_amount_without_cents_is_normalised_to_two_decimals() -> None:
    decoded = decode_transaction(changed(GOOD_TRANSACTION, amount="12"))
    assert isinstance(decoded, Transaction)
    assert json.loads(TRANSACTION.encode(decoded))["amount"] == "12.00"


def test_text_input_is_accepted_like_bytes() -> None:
    assert decode_transaction(json.dumps(GOOD_TRANSACTION)) == decode_transaction(
        encode(GOOD_TRANSACTION)
    )


# --- bad input -------------------------------------------------------------------------

T = GOOD_TRANSACTION
BAD_INPUT: list[Any] = [
    # (id, contract, raw, problem, field, schema_can_tell)
    ("empty", TRANSACTION, b"", Problem.NOT_JSON, None, True),
    ("truncated", TRANSACTION, encode(T)[:-3], Problem.NOT_JSON, None, True),
    ("not-utf8", TRANSACTION, b'{"tx_id": "\xff"}', Problem.NOT_JSON, None, True),
    ("nan-literal", TRANSACTION, b'{"amount": NaN}', Problem.NOT_JSON, None, True),
    ("plain-text", TRANSACTION, b"hello", Problem.NOT_JSON, None, True),
    ("array", TRANSACTION, b"[1, 2]", Problem.NOT_AN_OBJECT, None, True),
    ("string", TRANSACTION, b'"tx"', Problem.NOT_AN_OBJECT, None, True),
    ("null", TRANSACTION, b"null", Problem.NOT_AN_OBJECT, None, True),
    (
        "no-version",
        TRANSACTION,
        changed(T, schema_version=...),
        Problem.MISSING_FIELD,
        "schema_version",
        True,
    ),
    (
        "version-0",
        TRANSACTION,
        changed(T, schema_version=0),
        Problem.BAD_SCHEMA_VERSION,
        "schema_version",
        True,
    ),
    (
        "version-text",
        TRANSACTION,
        changed(T, schema_version="1"),
        Problem.BAD_SCHEMA_VERSION,
        "schema_version",
        True,
    ),
    (
        "version-fraction",
        TRANSACTION,
        changed(T, schema_version=1.5),
        Problem.BAD_SCHEMA_VERSION,
        "schema_version",
        True,
    ),
    ("no-tx-id", TRANSACTION, changed(T, tx_id=...), Problem.MISSING_FIELD, "tx_id", True),
    ("no-amount", TRANSACTION, changed(T, amount=...), Problem.MISSING_FIELD, "amount", True),
    (
        "null-customer",
        TRANSACTION,
        changed(T, customer_id=None),
        Problem.WRONG_TYPE,
        "customer_id",
        True,
    ),
    (
        "numeric-id",
        TRANSACTION,
        changed(T, customer_id=4999),
        Problem.WRONG_TYPE,
        "customer_id",
        True,
    ),
    ("empty-id", TRANSACTION, changed(T, terminal_id=""), Problem.BAD_VALUE, "terminal_id", True),
    ("id-with-space", TRANSACTION, changed(T, tx_id="1 2"), Problem.BAD_VALUE, "tx_id", True),
    (
        "id-with-brace",
        TRANSACTION,
        changed(T, customer_id="{C1}"),
        Problem.BAD_VALUE,
        "customer_id",
        True,
    ),
    ("id-too-long", TRANSACTION, changed(T, tx_id="9" * 65), Problem.BAD_VALUE, "tx_id", True),
    ("amount-number", TRANSACTION, changed(T, amount=123.45), Problem.WRONG_TYPE, "amount", True),
    ("amount-negative", TRANSACTION, changed(T, amount="-5.00"), Problem.BAD_VALUE, "amount", True),
    (
        "amount-3-decimals",
        TRANSACTION,
        changed(T, amount="12.345"),
        Problem.BAD_VALUE,
        "amount",
        True,
    ),
    ("amount-exponent", TRANSACTION, changed(T, amount="1e3"), Problem.BAD_VALUE, "amount", True),
    (
        "amount-leading-zero",
        TRANSACTION,
        changed(T, amount="012.00"),
        Problem.BAD_VALUE,
        "amount",
        True,
    ),
    ("amount-comma", TRANSACTION, changed(T, amount="12,50"), Problem.BAD_VALUE, "amount", True),
    ("amount-huge", TRANSACTION, changed(T, amount="1" * 13), Problem.BAD_VALUE, "amount", True),
    (
        "currency-lower",
        TRANSACTION,
        changed(T, currency="eur"),
        Problem.BAD_VALUE,
        "currency",
        True,
    ),
    (
        "currency-long",
        TRANSACTION,
        changed(T, currency="EURO"),
        Problem.BAD_VALUE,
        "currency",
        True,
    ),
    (
        "currency-numeric",
        TRANSACTION,
        changed(T, currency=978),
        Problem.WRONG_TYPE,
        "currency",
        True,
    ),
    (
        "time-iso-text",
        TRANSACTION,
        changed(T, tx_time="2018-04-01T00:00:00Z"),
        Problem.WRONG_TYPE,
        "tx_time",
        True,
    ),
    (
        "time-seconds",
        TRANSACTION,
        changed(T, tx_time=1_522_540_800),
        Problem.BAD_VALUE,
        "tx_time",
        True,
    ),
    (
        "time-micros",
        TRANSACTION,
        changed(T, tx_time=1_522_540_800_000_000),
        Problem.BAD_VALUE,
        "tx_time",
        True,
    ),
    ("time-negative", TRANSACTION, changed(T, tx_time=-1), Problem.BAD_VALUE, "tx_time", True),
    (
        "time-fraction",
        TRANSACTION,
        changed(T, tx_time=1_522_540_800_000.5),
        Problem.WRONG_TYPE,
        "tx_time",
        True,
    ),
    ("time-boolean", TRANSACTION, changed(T, tx_time=True), Problem.WRONG_TYPE, "tx_time", True),
    ("channel-upper", TRANSACTION, changed(T, channel="POS"), Problem.BAD_VALUE, "channel", True),
    (
        "mcc-short",
        TRANSACTION,
        changed(T, merchant_category="541"),
        Problem.BAD_VALUE,
        "merchant_category",
        True,
    ),
    ("country-lower", TRANSACTION, changed(T, country="fr"), Problem.BAD_VALUE, "country", True),
    (
        "report-before-tx",
        FRAUD_REPORT,
        changed(GOOD_REPORT, reported_at=TX_TIME - 1),
        Problem.BAD_VALUE,
        "reported_at",
        False,
    ),
    (
        "report-no-time",
        FRAUD_REPORT,
        changed(GOOD_REPORT, reported_at=...),
        Problem.MISSING_FIELD,
        "reported_at",
        True,
    ),
    ("score-above-1", ALERT, changed(GOOD_ALERT, score=1.5), Problem.BAD_VALUE, "score", True),
    ("score-text", ALERT, changed(GOOD_ALERT, score="0.9"), Problem.WRONG_TYPE, "score", True),
    (
        "score-below-threshold",
        ALERT,
        changed(GOOD_ALERT, score=0.2),
        Problem.BAD_VALUE,
        "score",
        False,
    ),
    (
        "alert-id-not-derived",
        ALERT,
        changed(GOOD_ALERT, alert_id=alert_id("1", "v3")),
        Problem.BAD_VALUE,
        "alert_id",
        False,
    ),
    (
        "alert-id-upper",
        ALERT,
        changed(GOOD_ALERT, alert_id=GOOD_ALERT["alert_id"].upper()),
        Problem.BAD_VALUE,
        "alert_id",
        True,
    ),
    (
        "reason-value-text",
        ALERT,
        changed(GOOD_ALERT, reasons=[{"feature": "TX_AMOUNT", "value": "high"}]),
        Problem.WRONG_TYPE,
        "reasons[0].value",
        True,
    ),
    (
        "reason-not-object",
        ALERT,
        changed(GOOD_ALERT, reasons=["TX_AMOUNT"]),
        Problem.WRONG_TYPE,
        "reasons[0]",
        True,
    ),
    (
        "reason-no-feature",
        ALERT,
        changed(GOOD_ALERT, reasons=[{"value": 1.0}]),
        Problem.MISSING_FIELD,
        "reasons[0].feature",
        True,
    ),
    (
        "reasons-object",
        ALERT,
        changed(GOOD_ALERT, reasons={"TX_AMOUNT": 1.0}),
        Problem.WRONG_TYPE,
        "reasons",
        True,
    ),
    (
        "too-many-reasons",
        ALERT,
        changed(GOOD_ALERT, reasons=[{"feature": "f", "value": 1.0}] * 65),
        Problem.BAD_VALUE,
        "reasons",
        True,
    ),
    (
        "feature-value-text",
        ALERT,
        changed(GOOD_ALERT, features={"TX_AMOUNT": "1"}),
        Problem.WRONG_TYPE,
        "features",
        True,
    ),
    (
        "features-array",
        ALERT,
        changed(GOOD_ALERT, features=[1.0]),
        Problem.WRONG_TYPE,
        "features",
        True,
    ),
    (
        "latency-negative",
        ALERT,
        changed(GOOD_ALERT, latency_ms=-3),
        Problem.BAD_VALUE,
        "latency_ms",
        True,
    ),
]


@pytest.mark.parametrize(
    ("contract", "raw", "problem", "field", "schema_can_tell"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input_gets_a_clear_reason(
    contract: Contract[Any],
    raw: bytes,
    problem: Problem,
    field: str | None,
    schema_can_tell: bool,
) -> None:
    result = contract.decode(raw)
    assert isinstance(result, DecodeError), result
    assert result.problem is problem, result
    assert result.field == field, result
    assert "\n" not in result.reason
    assert len(result.reason) < 200
    if field is not None:
        assert result.reason.startswith(f"{field}: ")
    assert str(result).startswith(f"{problem.value}: ")
    assert schema_accepts(contract, raw) is not schema_can_tell


def test_none_value_is_bad_input_not_a_crash() -> None:
    result = decode_transaction(None)
    assert isinstance(result, DecodeError)
    assert result.problem is Problem.NOT_JSON


def test_negative_amount_and_second_timestamps_say_what_is_wrong() -> None:
    negative = decode_transaction(changed(T, amount="-5.00"))
    seconds = decode_transaction(changed(T, tx_time=1_522_540_800))
    assert isinstance(negative, DecodeError)
    assert isinstance(seconds, DecodeError)
    assert "negative" in negative.reason
    assert "seconds instead of milliseconds" in seconds.reason


def test_dead_letter_headers_describe_the_problem() -> None:
    error = decode_transaction(changed(T, currency="eur"))
    assert isinstance(error, DecodeError)
    headers = dict(error.dlq_headers())
    assert headers["fraudstream-problem"] == b"bad_value"
    assert headers["fraudstream-field"] == b"currency"
    assert b"three capital letters" in headers["fraudstream-reason"]


def test_number_overflowing_to_infinity_is_a_bad_value() -> None:
    result = decode_alert(
        changed(GOOD_ALERT, features={"TX_AMOUNT": 1.0}).replace(b"1.0", b"1e400")
    )
    assert isinstance(result, DecodeError)
    assert (result.problem, result.field) == (Problem.BAD_VALUE, "features")
    assert "finite" in result.reason


def test_deeply_nested_json_is_bad_input_not_a_crash() -> None:
    result = decode_transaction(b"[" * 100_000 + b"]" * 100_000)
    assert isinstance(result, DecodeError)
    assert result.problem in (Problem.NOT_JSON, Problem.NOT_AN_OBJECT)


# --- generated events ------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
amounts = st.decimals(min_value=0, max_value=Decimal("9999999.99"), places=2)
times = st.integers(min_value=315_532_800_000, max_value=4_102_444_799_999)


@given(tx_id=ids, customer_id=ids, amount=amounts, tx_time=times)
def test_any_valid_transaction_round_trips_and_matches_the_schema(
    tx_id: str, customer_id: str, amount: Decimal, tx_time: int
) -> None:
    tx = Transaction(
        tx_id=tx_id,
        tx_time=tx_time,
        customer_id=customer_id,
        terminal_id="T1",
        amount=amount,
        currency="EUR",
    )
    raw = TRANSACTION.encode(tx)
    assert decode_transaction(raw) == tx
    assert schema_accepts(TRANSACTION, raw)


def test_unknown_fields_in_an_event_of_the_current_version_are_refused() -> None:
    raw = changed(GOOD_TRANSACTION, wallet="apple_pay")
    decoded = decode_transaction(raw)
    assert isinstance(decoded, DecodeError)
    assert decoded.problem is Problem.UNKNOWN_FIELD
    assert decoded.field == "wallet"
    assert "raise schema_version" in decoded.reason
    assert not schema_accepts(TRANSACTION, raw)


def test_amounts_of_ten_million_or_more_are_refused_as_absurd() -> None:
    decoded = decode_transaction(changed(GOOD_TRANSACTION, amount="10000000.00"))
    assert isinstance(decoded, DecodeError)
    assert decoded.problem is Problem.BAD_VALUE
    assert decoded.field == "amount"
    assert isinstance(
        decode_transaction(changed(GOOD_TRANSACTION, amount="9999999.99")), Transaction
    )


@given(
    st.binary(max_size=200) | st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_any_bytes_decode_to_an_event_or_a_problem_that_can_be_sent(raw: bytes) -> None:
    for decode in (decode_transaction, decode_fraud_report):
        result = decode(raw)
        if isinstance(result, DecodeError):
            for name, value in result.dlq_headers():
                name.encode()
                assert isinstance(value, bytes)


@given(
    st.dictionaries(
        st.text(st.sampled_from(["a", "\ud800", "\udfff", "\u00e9", "\x00"]), max_size=8),
        st.none() | st.integers() | st.text(max_size=8),
    )
)
def test_any_object_with_any_field_names_decodes_or_is_refused_with_sendable_headers(
    extra: dict[str, object],
) -> None:
    event = {
        "tx_id": "t1",
        "tx_time": 1_700_000_000_000,
        "customer_id": "C1",
        "terminal_id": "T1",
        "amount": "1.00",
        "currency": "EUR",
        "schema_version": 1,
        **extra,
    }
    result = decode_transaction(json.dumps(event).encode())
    if isinstance(result, DecodeError):
        assert all(isinstance(value, bytes) for _, value in result.dlq_headers())
