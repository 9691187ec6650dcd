"""streams.tracecontext: a transaction's trace carried onto its alert as a child span."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.tracecontext import TRACEPARENT, child_of, parent_of

VALID = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SHAPE = re.compile(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def test_a_child_keeps_the_trace_and_flags_with_a_new_parent_id() -> None:
    child = child_of(parent_of([("other", b"x"), (TRACEPARENT, VALID)]))
    assert SHAPE.fullmatch(child)
    assert child[:36] == VALID[:36]
    assert child[52:] == VALID[52:]
    assert child[36:52] != VALID[36:52]


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # unknown version
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        VALID + b"-extra",
    ],
)
def test_an_invalid_header_starts_a_new_unsampled_trace(value: bytes | None) -> None:
    assert parent_of([(TRACEPARENT, value)]) is None
    fresh = child_of(None)
    assert SHAPE.fullmatch(fresh)
    assert fresh.endswith(b"-00")


@given(st.lists(st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=70)), max_size=4))
def test_any_headers_give_a_valid_traceparent(headers: list[tuple[str, bytes | None]]) -> None:
    assert SHAPE.fullmatch(child_of(parent_of(headers)))
