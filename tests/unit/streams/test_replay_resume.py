"""streams.replay.resume: each partition continues right after its last event."""

from __future__ import annotations

import pytest

from streams.replay.events import REPORT, TRANSACTION
from streams.replay.resume import (
    REPLAY_SEQ_HEADER,
    ResumeError,
    Tail,
    read_mark,
    to_send,
    written,
)

TOPICS = {TRANSACTION: "transactions", REPORT: "fraud-reports"}
A, B, R = (TRANSACTION, 0), (TRANSACTION, 1), (REPORT, 0)


def test_the_mark_is_read_back() -> None:
    assert read_mark([("fraudstream-sent-ms", b"1"), (REPLAY_SEQ_HEADER, b"42")]) == 42
    assert read_mark([(REPLAY_SEQ_HEADER, b"x")]) is None
    assert read_mark([]) is None


def test_each_partition_skips_what_it_holds_and_checks_its_last_event() -> None:
    held = written({A: Tail(3, 4, b"e4"), B: Tail(1, 1, b"e1"), R: Tail(0)}, topics=TOPICS)
    targets = [A, B, A, R, A, B, A]
    values = [b"e0", b"e1", b"e2", b"e3", b"e4", b"e5", b"e6"]
    assert to_send(0, targets, values, held, TOPICS) == [3, 5, 6]
    assert to_send(5, [B, A], [b"e5", b"e6"], held, TOPICS) is None  # past every tail

    with pytest.raises(ResumeError, match="another transaction than event 4"):
        to_send(0, targets, [*values[:4], b"other", *values[5:]], held, TOPICS)


def test_partitions_unmoved_since_the_start_hold_nothing_of_this_replay() -> None:
    at_start = {A: Tail(10, 99, b"old"), B: Tail(0)}
    now = {A: Tail(10, 99, b"old"), B: Tail(2, 3, b"e3")}
    held = written(now, since=at_start, topics=TOPICS)
    assert held.last == {B: 3}


def test_an_unmarked_tail_cannot_be_resumed() -> None:
    with pytest.raises(ResumeError, match="partition 0 of fraud-reports ends with a record"):
        written({R: Tail(5, None, b"x")}, topics=TOPICS)
