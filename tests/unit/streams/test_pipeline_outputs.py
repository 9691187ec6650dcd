"""The agents' output encoders: what they write decodes, with the published contracts, to
the records they were given; dead letters keep the original bytes and say what and where.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features.spec import DEFAULT_FEATURES
from models.explain import Reason
from streams.contracts import (
    ALERT,
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    SCORE,
    DecodeError,
    Problem,
    decode_alert,
    decode_score,
)
from streams.pipeline.outputs import (
    HEADERS_DROPPED_HEADER,
    KEY_TRUNCATED_HEADER,
    MAX_DLQ_KEY_BYTES,
    MAX_DLQ_VALUE_BYTES,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    TRUNCATED_HEADER,
    alert_value,
    dlq_record,
    score_value,
)
from streams.records import Alert, AlertReason, Score, Transaction, alert_id

ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
amounts = st.decimals(min_value=0, max_value=Decimal("9999999.99"), places=2)
times = st.integers(min_value=MIN_EPOCH_MS, max_value=MAX_EPOCH_MS)
unit = st.floats(min_value=0.0, max_value=1.0)
finite = st.floats(allow_nan=False, allow_infinity=False)
names = st.sampled_from(DEFAULT_FEATURES.names)
feature_maps = st.dictionaries(names, finite, max_size=len(DEFAULT_FEATURES.names))
reason_lists = st.lists(st.builds(Reason, names, finite, finite), max_size=5)


def transaction(
    tx_id: str, customer_id: str, terminal_id: str, amount: Decimal, tx_time: int
) -> Transaction:
    return Transaction(
        tx_id=tx_id,
        tx_time=tx_time,
        customer_id=customer_id,
        terminal_id=terminal_id,
        amount=amount,
        currency="EUR",
        channel="pos",
    )


# --- scores and alerts ---------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    tx_id=ids,
    customer_id=ids,
    terminal_id=ids,
    amount=amounts,
    tx_time=times,
    score=unit,
    threshold=unit,
    version=ids,
    features=feature_maps,
    scored_at=times,
)
@example(
    tx_id="1",
    customer_id="C1",
    terminal_id="T1",
    amount=Decimal("0"),
    tx_time=MIN_EPOCH_MS,
    score=0.0,
    threshold=1.0,
    version="v1",
    features={},
    scored_at=MAX_EPOCH_MS,
)
@example(
    tx_id="x" * 64,
    customer_id="C1",
    terminal_id="T1",
    amount=Decimal("9999999.99"),
    tx_time=MAX_EPOCH_MS,
    score=1.0,
    threshold=0.0,
    version="v1",
    features=dict.fromkeys(DEFAULT_FEATURES.names, -0.0),
    scored_at=MIN_EPOCH_MS,
)
def test_score_value_decodes_to_the_score_given(
    tx_id: str,
    customer_id: str,
    terminal_id: str,
    amount: Decimal,
    tx_time: int,
    score: float,
    threshold: float,
    version: str,
    features: dict[str, float],
    scored_at: int,
) -> None:
    tx = transaction(tx_id, customer_id, terminal_id, amount, tx_time)
    raw = score_value(
        tx,
        score=score,
        threshold=threshold,
        model_version=version,
        features=features,
        scored_at=scored_at,
    )
    decoded = decode_score(raw)
    assert isinstance(decoded, Score), decoded
    assert decoded == Score(
        tx_id=tx_id,
        customer_id=customer_id,
        terminal_id=terminal_id,
        tx_time=tx_time,
        score=score,
        threshold=threshold,
        model_version=version,
        features=features,
        scored_at=scored_at,
    )
    assert decoded.features == features  # every float exactly, not just equal records
    assert list(json.loads(raw)) == list(SCORE.fields)  # contract field order


@settings(max_examples=150, deadline=None)
@given(
    tx_id=ids,
    customer_id=ids,
    terminal_id=ids,
    amount=amounts,
    tx_time=times,
    scores=st.tuples(unit, unit).map(sorted),
    version=ids,
    reasons=reason_lists,
    features=feature_maps,
    emitted_at=times,
    latency_ms=st.integers(min_value=0, max_value=2**53),
)
@example(
    tx_id="1",
    customer_id="C1",
    terminal_id="T1",
    amount=Decimal("0"),
    tx_time=MIN_EPOCH_MS,
    scores=[0.0, 0.0],
    version="v1",
    reasons=[],
    features={},
    emitted_at=MIN_EPOCH_MS,
    latency_ms=0,
)
@example(
    tx_id="t-9",
    customer_id="C.9:x_y",
    terminal_id="T9",
    amount=Decimal("9999999.99"),
    tx_time=MAX_EPOCH_MS,
    scores=[0.25, 1.0],
    version="20240501T120000Z-lr-0123abcd",
    reasons=[Reason("TX_AMOUNT", 9999999.99, 0.7), Reason("TX_DURING_NIGHT", 1.0, 1e-300)],
    features={"TX_AMOUNT": 9999999.99, "TX_DURING_NIGHT": 1.0},
    emitted_at=MAX_EPOCH_MS,
    latency_ms=123,
)
def test_alert_value_decodes_to_the_alert_given(
    tx_id: str,
    customer_id: str,
    terminal_id: str,
    amount: Decimal,
    tx_time: int,
    scores: list[float],
    version: str,
    reasons: list[Reason],
    features: dict[str, float],
    emitted_at: int,
    latency_ms: int,
) -> None:
    threshold, score = scores
    tx = transaction(tx_id, customer_id, terminal_id, amount, tx_time)
    raw = alert_value(
        tx,
        score=score,
        threshold=threshold,
        model_version=version,
        reasons=reasons,
        features=features,
        emitted_at=emitted_at,
        latency_ms=latency_ms,
    )
    decoded = decode_alert(raw)
    assert isinstance(decoded, Alert), decoded
    expected = Alert(
        alert_id=alert_id(tx_id, version),
        tx_id=tx_id,
        customer_id=customer_id,
        terminal_id=terminal_id,
        amount=amount,
        currency="EUR",
        tx_time=tx_time,
        score=score,
        threshold=threshold,
        model_version=version,
        reasons=[
            AlertReason(feature=r.feature, value=r.value, contribution=r.contribution)
            for r in reasons
        ],
        features=features,
        emitted_at=emitted_at,
        latency_ms=latency_ms,
    )
    assert decoded == expected
    assert decoded.alert_id == alert_id(tx_id, version)
    assert decoded.amount == amount
    payload = json.loads(raw)
    assert payload["amount"] == f"{amount:.2f}"  # a decimal string, two places
    assert [(r.feature, r.value, r.contribution) for r in decoded.reasons] == [
        tuple(r) for r in reasons
    ]
    assert list(payload) == list(ALERT.fields)


def test_alert_amounts_are_decimal_strings_at_both_ends_of_the_range() -> None:
    for amount, text in (
        (Decimal("0"), "0.00"),
        (Decimal("9999999.99"), "9999999.99"),
        (Decimal("12.3"), "12.30"),
    ):
        raw = alert_value(
            transaction("t1", "C1", "T1", amount, MIN_EPOCH_MS),
            score=0.9,
            threshold=0.5,
            model_version="v1",
            reasons=[Reason("TX_AMOUNT", float(amount), 0.4)],
            features={"TX_AMOUNT": float(amount)},
            emitted_at=MIN_EPOCH_MS + 5,
            latency_ms=5,
        )
        assert json.loads(raw)["amount"] == text
        decoded = decode_alert(raw)
        assert isinstance(decoded, Alert)
        assert decoded.amount == amount


# --- dead letters --------------------------------------------------------------------------


def test_a_dead_letter_keeps_the_original_bytes_and_says_what_and_where() -> None:
    original = b'{"tx_id": "1", "amount": -5}'
    problem = DecodeError(Problem.BAD_VALUE, "amount: must not be negative", "amount")
    _, value, headers = dlq_record(
        original, problem, topic="transactions", partition=4, offset=1234
    )
    assert value == original
    assert headers == [
        ("fraudstream-problem", b"bad_value"),
        ("fraudstream-reason", b"amount: must not be negative"),
        ("fraudstream-field", b"amount"),
        (SOURCE_TOPIC_HEADER, b"transactions"),
        (SOURCE_PARTITION_HEADER, b"4"),
        (SOURCE_OFFSET_HEADER, b"1234"),
    ]


def test_a_dead_letter_without_a_field_or_value_has_no_such_header() -> None:
    problem = DecodeError(Problem.NOT_JSON, "empty message (null or zero bytes)")
    _, value, headers = dlq_record(None, problem, topic="fraud-reports", partition=0, offset=0)
    assert value is None
    names = [name for name, _ in headers]
    assert names == [
        "fraudstream-problem",
        "fraudstream-reason",
        SOURCE_TOPIC_HEADER,
        SOURCE_PARTITION_HEADER,
        SOURCE_OFFSET_HEADER,
    ]
    assert problem.dlq_headers() == headers[:2]  # the problem's own list is not extended


@pytest.mark.parametrize(
    ("size", "cut"),
    [
        (MAX_DLQ_VALUE_BYTES - 1, False),
        (MAX_DLQ_VALUE_BYTES, False),
        (MAX_DLQ_VALUE_BYTES + 1, True),
        (3 * MAX_DLQ_VALUE_BYTES, True),
    ],
)
def test_dead_letters_over_the_limit_are_cut_and_say_their_length(size: int, cut: bool) -> None:
    original = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert len(original) == size
    problem = DecodeError(Problem.TOO_LARGE, f"message of {size} bytes")
    _, value, headers = dlq_record(original, problem, topic="t", partition=1, offset=2)
    found = dict(headers)
    assert value is not None
    if cut:
        assert value == original[:MAX_DLQ_VALUE_BYTES]
        assert found[TRUNCATED_HEADER] == str(size).encode()
    else:
        assert value == original
        assert TRUNCATED_HEADER not in found
    assert found["fraudstream-problem"] == b"too_large"
    assert (
        found[SOURCE_TOPIC_HEADER],
        found[SOURCE_PARTITION_HEADER],
        found[SOURCE_OFFSET_HEADER],
    ) == (b"t", b"1", b"2")


#: What the worker's producer sends at most (Faust's producer_max_request_size).
PRODUCER_MAX_REQUEST_BYTES = 1_000_000
#: The most a record batch may take on a broker by default (message.max.bytes).
BROKER_MAX_MESSAGE_BYTES = 1_048_588


@settings(max_examples=300, deadline=None)
@given(
    key_size=st.integers(0, BROKER_MAX_MESSAGE_BYTES),
    value_size=st.integers(0, BROKER_MAX_MESSAGE_BYTES),
    header_sizes=st.lists(st.integers(0, 200_000), max_size=20),
    many_small=st.integers(0, 60_000),
    reason_size=st.integers(0, 2_000_000),
)
@example(
    key_size=0, value_size=BROKER_MAX_MESSAGE_BYTES, header_sizes=[], many_small=0, reason_size=0
)
@example(key_size=0, value_size=900_000, header_sizes=[140_000], many_small=0, reason_size=0)
@example(key_size=500_000, value_size=500_000, header_sizes=[], many_small=0, reason_size=0)
def test_any_dead_letter_fits_the_producers_request_limit(
    key_size: int, value_size: int, header_sizes: list[int], many_small: int, reason_size: int
) -> None:
    # Whatever the broker took (and more), the copy is one the producer will send:
    # a dead letter it refused could not be sent at all.
    headers: list[tuple[str, bytes | None]] = [
        (f"h{i}", b"v" * size) for i, size in enumerate(header_sizes)
    ]
    headers += [("x", None)] * many_small  # framing only: many headers of no bytes
    problem = DecodeError(Problem.UNKNOWN_FIELD, "r" * reason_size, field="f" * reason_size)
    key, value, out = dlq_record(
        b"v" * value_size,
        problem,
        key=b"k" * key_size,
        topic="transactions",
        partition=3,
        offset=7,
        headers=headers,
        traceparent=b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01",
    )
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, out)
    assert size <= PRODUCER_MAX_REQUEST_BYTES
    found = dict(out)
    assert found[SOURCE_OFFSET_HEADER] == b"7"
    assert found["fraudstream-problem"] == b"unknown_field"
    assert (KEY_TRUNCATED_HEADER in found) == (key_size > MAX_DLQ_KEY_BYTES)
    assert (TRUNCATED_HEADER in found) == (value_size > MAX_DLQ_VALUE_BYTES)
    # The input's headers are kept whole or dropped whole, and the drop is said.
    kept = [h for h in out if h[0].startswith("h") or h[0] == "x"]
    if HEADERS_DROPPED_HEADER in found:
        assert kept == []
        assert found[HEADERS_DROPPED_HEADER] == str(len(headers)).encode()
    else:
        assert kept == headers


def test_small_headers_are_kept_in_their_order_with_ours_after_them() -> None:
    problem = DecodeError(Problem.NOT_JSON, "not JSON")
    _, _, out = dlq_record(
        b"{", problem, topic="t", partition=0, offset=1, headers=[("b", b"2"), ("a", None)]
    )
    assert out[:2] == [("b", b"2"), ("a", None)]
    assert HEADERS_DROPPED_HEADER not in dict(out)
