"""Forward messages: the scorer's rows for the terminal agents, encoded and refused exactly."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.contracts import DecodeError, Problem
from streams.pipeline.forwards import (
    FORWARD_VERSION,
    ForwardMessage,
    ForwardRow,
    Row,
    decode_forward_message,
    decode_forwards,
    encode_forwards,
    row_value,
)

T0 = 1_700_000_000_000
FIELDS = (
    "source_partition",
    "source_offset",
    "tx_id",
    "customer_id",
    "terminal_id",
    "tx_time",
    "amount",
)
GOOD: list[Any] = [3, 41, "tx-1", "C1", "T1", T0, 12.5]

#: Text orjson can write (any string but lone surrogates, which are not UTF-8).
texts = st.text(st.characters(codec="utf-8"), max_size=80)
any_rows = st.tuples(
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**63 - 1),
    texts,
    texts,
    texts,
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
amounts = st.decimals(min_value=0, max_value=Decimal("9999999.99"), places=2)


def raw(message: Any) -> bytes:
    return json.dumps(message).encode()


def message_of(*rows: list[Any], v: Any = FORWARD_VERSION) -> bytes:
    return raw({"v": v, "rows": list(rows)})


def problem_of(value: bytes | None) -> DecodeError:
    decoded = decode_forwards(value)
    assert isinstance(decoded, DecodeError), decoded
    return decoded


# --- round trips ---------------------------------------------------------------------------


def test_the_format_is_an_object_with_a_version_and_rows_as_lists() -> None:
    row: Row = (3, 41, "tx-1", "C1", "T1", T0, 12.5)
    assert json.loads(encode_forwards([row])) == {"v": 1, "rows": [GOOD]}
    assert FORWARD_VERSION == 1


@given(st.lists(any_rows, max_size=20))
def test_rows_round_trip(written: list[Row]) -> None:
    decoded = decode_forwards(encode_forwards(written))
    assert decoded == [ForwardRow(*row) for row in written]
    assert isinstance(decoded, list)
    for row in decoded:
        assert type(row) is ForwardRow
        assert [type(value) for value in row] == [int, int, str, str, str, int, float]


@given(st.lists(amounts, min_size=1, max_size=10))
def test_decimal_amounts_read_back_as_exactly_their_float(decimals: list[Decimal]) -> None:
    written: list[Row] = [
        (0, i, f"tx-{i}", "C1", "T1", T0, float(amount)) for i, amount in enumerate(decimals)
    ]
    decoded = decode_forwards(encode_forwards(written))
    assert isinstance(decoded, list)
    for row, amount in zip(decoded, decimals, strict=True):
        assert type(row.amount) is float
        assert row.amount == float(amount)
        assert row.amount.hex() == float(amount).hex()  # the same float, bit for bit


@pytest.mark.parametrize("amount", ["0.00", "0.01", "0.10", "1999.99", "100.10", "9999999.99"])
def test_awkward_amounts_read_back_exactly(amount: str) -> None:
    decoded = decode_forwards(encode_forwards([(0, 0, "t", "C", "T", T0, float(Decimal(amount)))]))
    assert isinstance(decoded, list)
    assert decoded[0].amount == float(Decimal(amount))


@pytest.mark.parametrize("amount", [0, 12, 9_999_999])
def test_an_int_amount_is_read_as_a_float(amount: int) -> None:
    decoded = decode_forwards(message_of([*GOOD[:6], amount]))
    assert isinstance(decoded, list)
    [row] = decoded
    assert type(row.amount) is float
    assert row.amount == float(amount)
    assert row == ForwardRow(*[*GOOD[:6], float(amount)])


def test_no_rows_are_no_rows() -> None:
    assert decode_forwards(encode_forwards([])) == []
    assert decode_forwards(message_of()) == []


def test_rows_keep_their_order() -> None:
    written: list[Row] = [
        (1, 9, "a", "C1", "T1", T0, 1.0),
        (0, 3, "b", "C2", "T2", T0 - 1, 2.0),
        (1, 10, "c", "C1", "T1", T0 + 1, 3.0),
    ]
    decoded = decode_forwards(encode_forwards(written))
    assert decoded == [ForwardRow(*row) for row in written]


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem", "field"),
    [
        (None, Problem.NOT_JSON, None),
        (b"", Problem.NOT_JSON, None),
        (b"{not json", Problem.NOT_JSON, None),
        (b'{"v": 1, "rows": [', Problem.NOT_JSON, None),
        (b"\xff\xfe", Problem.NOT_JSON, None),
        (b"[]", Problem.NOT_AN_OBJECT, None),
        (raw([1, [GOOD]]), Problem.NOT_AN_OBJECT, None),
        (b"null", Problem.NOT_AN_OBJECT, None),
        (b"1", Problem.NOT_AN_OBJECT, None),
        (b'"rows"', Problem.NOT_AN_OBJECT, None),
        (raw({"rows": [GOOD]}), Problem.BAD_SCHEMA_VERSION, "v"),
        (message_of(GOOD, v=2), Problem.BAD_SCHEMA_VERSION, "v"),
        (message_of(GOOD, v=0), Problem.BAD_SCHEMA_VERSION, "v"),
        (message_of(GOOD, v="1"), Problem.BAD_SCHEMA_VERSION, "v"),
        (message_of(GOOD, v=None), Problem.BAD_SCHEMA_VERSION, "v"),
        (raw({"v": 1}), Problem.MISSING_FIELD, "rows"),
        (raw({"v": 1, "rows": None}), Problem.MISSING_FIELD, "rows"),
        (raw({"v": 1, "row": [GOOD]}), Problem.MISSING_FIELD, "rows"),
    ],
)
def test_messages_that_are_not_forwards_are_refused(
    value: bytes | None, problem: Problem, field: str | None
) -> None:
    error = problem_of(value)
    assert (error.problem, error.field) == (problem, field)
    assert error.reason


@pytest.mark.parametrize(
    ("rows", "field"),
    [
        ([GOOD[:6]], "rows[0]"),  # too short
        ([[*GOOD, 1.0]], "rows[0]"),  # too long
        ([[]], "rows[0]"),
        ([GOOD, GOOD[1:]], "rows[1]"),  # the second row is bad
        ([dict(zip(FIELDS, GOOD, strict=True))], "rows[0]"),  # an object, not a list
        ([3], "rows[0]"),  # a number
        ([None], "rows[0]"),
        ([json.dumps(GOOD)], "rows[0]"),  # a string
    ],
)
def test_rows_that_are_not_lists_of_seven_are_refused(rows: list[Any], field: str) -> None:
    error = problem_of(message_of(*rows))
    assert (error.problem, error.field) == (Problem.WRONG_TYPE, field)


#: Values of the wrong type for each field: bools are not ints, floats are not ints,
#: numbers are not strings, strings are not numbers.
WRONG_VALUES: dict[str, list[Any]] = {
    "source_partition": [True, False, 1.0, "3", None, [3]],
    "source_offset": [True, 41.0, "41", None],
    "tx_id": [1, None, ["tx-1"], True],
    "customer_id": [1, None, {"id": "C1"}],
    "terminal_id": [1.5, None, False],
    "tx_time": [float(T0), str(T0), True, None],
    "amount": ["12.50", True, False, None, [12.5]],
}


@pytest.mark.parametrize(
    ("index", "name", "value"),
    [(index, name, value) for index, name in enumerate(FIELDS) for value in WRONG_VALUES[name]],
)
def test_a_field_of_the_wrong_type_is_refused_by_name(index: int, name: str, value: Any) -> None:
    row = list(GOOD)
    row[index] = value
    error = problem_of(message_of(GOOD, row))
    assert (error.problem, error.field) == (Problem.WRONG_TYPE, f"rows[1].{name}")
    assert name in error.reason


@pytest.mark.parametrize(("partition", "offset"), [(-1, 0), (0, -1), (-5, -5)])
def test_a_negative_source_position_is_refused(partition: int, offset: int) -> None:
    error = problem_of(message_of(GOOD, [partition, offset, *GOOD[2:]]))
    assert (error.problem, error.field) == (Problem.BAD_VALUE, "rows[1]")


def test_zero_is_a_source_position() -> None:
    assert decode_forwards(message_of([0, 0, *GOOD[2:]])) == [ForwardRow(0, 0, *GOOD[2:])]


# --- dead-letter values --------------------------------------------------------------------


def test_a_row_value_is_a_json_object_of_its_fields() -> None:
    row = ForwardRow(3, 41, "tx-1", "C1", "T1", T0, 12.5)
    value = json.loads(row_value(row))
    assert value == {
        "source_partition": 3,
        "source_offset": 41,
        "tx_id": "tx-1",
        "customer_id": "C1",
        "terminal_id": "T1",
        "tx_time": T0,
        "amount": 12.5,
    }
    assert list(value) == list(FIELDS)  # in row order
    assert tuple(ForwardRow._fields) == FIELDS


@given(any_rows)
def test_row_values_hold_every_field(written: Row) -> None:
    row = ForwardRow(*written)
    assert json.loads(row_value(row)) == row._asdict()


@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_a_version_that_only_looks_like_one_is_refused(version: object) -> None:
    problem = decode_forwards(orjson.dumps({"v": version, "rows": []}))
    assert isinstance(problem, DecodeError)
    assert problem.problem is Problem.BAD_SCHEMA_VERSION


def test_rows_that_are_not_a_list_are_the_wrong_type() -> None:
    problem = decode_forwards(orjson.dumps({"v": 1, "rows": {}}))
    assert isinstance(problem, DecodeError)
    assert (problem.problem, problem.field) == (Problem.WRONG_TYPE, "rows")


# --- trace context (#18) -------------------------------------------------------------------

TRACED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#: Valid version-00 traceparents (trace and parent ids not all zero).
traceparents = st.builds(
    lambda trace, parent, flags: f"00-{trace:032x}-{parent:016x}-{flags:02x}",
    st.integers(1, 2**128 - 1),
    st.integers(1, 2**64 - 1),
    st.integers(0, 255),
)


def traced_message(rows: list[list[Any]], tp: Any) -> bytes:
    return raw({"v": FORWARD_VERSION, "rows": rows, "tp": tp})


def test_a_traced_row_is_named_by_its_index_beside_the_rows() -> None:
    row: Row = (3, 41, "tx-1", "C1", "T1", T0, 12.5)
    value = json.loads(encode_forwards([row, row], None, [(1, TRACED)]))
    assert value == {"v": 1, "rows": [GOOD, GOOD], "tp": [[1, TRACED]]}
    # With watermarks, and without any trace: no "tp" at all.
    assert json.loads(encode_forwards([row], {0: 5}, [])) == {
        "v": 1,
        "rows": [GOOD],
        "wm": {"0": 5},
    }
    assert json.loads(encode_forwards([row], None, None)) == {"v": 1, "rows": [GOOD]}


@given(st.lists(st.tuples(any_rows, st.none() | traceparents), max_size=20), st.booleans())
def test_rows_and_their_traces_round_trip(
    written: list[tuple[Row, str | None]], declare: bool
) -> None:
    rows = [row for row, _ in written]
    traces = [(i, trace) for i, (_, trace) in enumerate(written) if trace is not None]
    watermarks = {0: T0} if declare else None
    message = decode_forward_message(encode_forwards(rows, watermarks, traces))
    assert isinstance(message, ForwardMessage)
    assert message.rows == [ForwardRow(*row) for row in rows]
    assert message.traces == {i: trace.encode() for i, trace in traces}
    assert message.watermarks == (watermarks or {})
    # The rows themselves are the same seven values, traced or not.
    for row in orjson.loads(encode_forwards(rows, watermarks, traces))["rows"]:
        assert len(row) == 7


@given(st.lists(any_rows, max_size=10))
def test_messages_without_traces_decode_with_none(written: list[Row]) -> None:
    message = decode_forward_message(encode_forwards(written))
    assert isinstance(message, ForwardMessage)
    assert message.traces == {}


def test_a_decoder_reads_only_the_keys_it_knows() -> None:
    """What lets "tp" come without a new version: older decoders skip it as they skip any
    key they do not know (a decoder of this version skips the next ones likewise)."""
    message = decode_forward_message(
        raw({"v": 1, "rows": [GOOD], "tp": [[0, TRACED]], "next": {"x": [1]}})
    )
    assert isinstance(message, ForwardMessage)
    assert message.rows == [ForwardRow(*GOOD)]
    assert message.traces == {0: TRACED.encode()}


@pytest.mark.parametrize(
    "trace",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # cut short
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # unknown version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        TRACED + " ",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u0661",  # a non-ASCII digit
        "",
    ],
)
def test_a_trace_that_is_not_a_valid_traceparent_is_ignored_not_refused(trace: str) -> None:
    message = decode_forward_message(traced_message([GOOD, GOOD], [[0, trace], [1, TRACED]]))
    assert isinstance(message, ForwardMessage)
    assert message.rows == [ForwardRow(*GOOD), ForwardRow(*GOOD)]
    assert message.traces == {1: TRACED.encode()}


@pytest.mark.parametrize(
    ("tp", "problem"),
    [
        ({"0": TRACED}, Problem.WRONG_TYPE),  # an object, not a list
        (TRACED, Problem.WRONG_TYPE),
        ([TRACED], Problem.WRONG_TYPE),  # not a pair
        ([[0]], Problem.WRONG_TYPE),
        ([[0, TRACED, 1]], Problem.WRONG_TYPE),
        ([[True, TRACED]], Problem.WRONG_TYPE),  # a bool is not an index
        ([[0.0, TRACED]], Problem.WRONG_TYPE),
        ([["0", TRACED]], Problem.WRONG_TYPE),
        ([[0, None]], Problem.WRONG_TYPE),
        ([[0, TRACED], [0, 5]], Problem.WRONG_TYPE),  # the second entry is bad
        ([[1, TRACED]], Problem.BAD_VALUE),  # no row 1
        ([[-1, TRACED]], Problem.BAD_VALUE),
    ],
)
def test_a_trace_list_that_is_not_index_pairs_refuses_the_message(
    tp: Any, problem: Problem
) -> None:
    error = problem_of(traced_message([GOOD], tp))
    assert (error.problem, error.field) == (problem, "tp")


def test_a_trace_list_names_rows_only_if_there_are_rows() -> None:
    assert problem_of(traced_message([], [[0, TRACED]])).problem is Problem.BAD_VALUE
    message = decode_forward_message(traced_message([], []))
    assert message == ForwardMessage([], {}, {})


#: Any JSON value, nested a little.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | texts | traceparents,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@given(json_values)
def test_any_trace_list_decodes_or_refuses_the_message_never_raises(tp: Any) -> None:
    message = decode_forward_message(orjson.dumps({"v": 1, "rows": [GOOD, GOOD], "tp": tp}))
    if isinstance(message, DecodeError):
        assert message.field == "tp"
        return
    assert message.rows == [ForwardRow(*GOOD), ForwardRow(*GOOD)]
    assert set(message.traces) <= {0, 1}
    assert all(
        value[:3] == b"00-" and len(value) == len(TRACED) for value in message.traces.values()
    )
