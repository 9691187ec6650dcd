"""TableAccess (direct store calls or the Faust table) and DecodedStates (decoded-state reuse).

Pure: a fake store with the ``redis://`` store's direct calls stands in for Redis, and the
table doubles of ``pipeline_doubles`` for a table reached through Faust's current event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import pytest
from faust.streams import current_event
from faust.types import TP, EventT
from pipeline_doubles import Event, Message, Recorder, Store, TableDouble, Write

from features.online import EntityState, OnlineFeatures
from features.spec import DEFAULT_FEATURES, Entity
from streams.faustcompat.eventctx import restore_current_event, set_current_event
from streams.pipeline.tables import DecodedStates, TableAccess

T0 = 1_700_000_000_000
SECOND = 1000


# --- helpers -------------------------------------------------------------------------------


def customer_state(transactions: int, start_ms: int = T0) -> EntityState:
    """A real customer state that has seen a few transactions."""
    windows = OnlineFeatures(DEFAULT_FEATURES).entities[Entity.CUSTOMER]
    state = EntityState()
    for i in range(transactions):
        windows.record(state, start_ms + i * SECOND, 10.0 + i, f"T{i}")
    return state


def distinct_copy(raw: bytes) -> bytes:
    """Bytes equal to ``raw`` in a different object."""
    copy = bytes(bytearray(raw))
    assert copy == raw
    assert copy is not raw
    return copy


class PositionedMessage(Message):
    """A message that also has the ``tp`` of a real Kafka message (the direct path's)."""

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


def event(partition: int, offset: int, topic: str = "transactions") -> EventT[Any]:
    return cast("EventT[Any]", Event(b"k", b"v", PositionedMessage(topic, partition, offset)))


class DirectStore:
    """What TableAccess needs of a ``redis://`` store without changelog; records calls."""

    def __init__(self, *, uses_changelog: bool = False) -> None:
        self.uses_changelog = uses_changelog
        self.values: dict[tuple[int, bytes], bytes | None] = {}
        self.calls: list[tuple[Any, ...]] = []

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        self.calls.append(("get_in", partition, key, current_event()))
        return self.values.get((partition, key))

    def put_at(self, tp: TP, offset: int, key: bytes, value: bytes | None) -> None:
        self.calls.append(("put_at", tp, offset, key, value, current_event()))
        self.values[(tp.partition, key)] = value

    def prefetch(self, partition_keys: Mapping[int, Iterable[bytes]]) -> None:
        self.calls.append(("prefetch", {p: list(keys) for p, keys in partition_keys.items()}))


class UntouchableTable:
    """A table that must not be used: the direct path bypasses it."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        raise AssertionError("the table was read: the direct path should bypass it")

    def __setitem__(self, key: bytes, value: bytes) -> None:
        raise AssertionError("the table was written: the direct path should bypass it")


class FailingTable(TableDouble):
    """A table double whose reads and writes fail after checking the current event."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(recorder)
        self.seen: list[Any] = []

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        self.seen.append(current_event())
        raise RuntimeError("read failed")

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.seen.append(current_event())
        raise RuntimeError("write failed")


# --- TableAccess: the direct path ----------------------------------------------------------


def test_a_store_with_put_at_and_no_changelog_is_used_directly() -> None:
    store = DirectStore()
    access = TableAccess(UntouchableTable(store))
    assert access.direct

    e = event(partition=4, offset=17)
    access.put(e, b"C1", b"state-1")
    assert access.get(e, b"C1") == b"state-1"
    assert access.get(event(partition=2, offset=18), b"C1") is None  # another partition

    assert store.calls == [
        ("put_at", TP("transactions", 4), 17, b"C1", b"state-1", None),
        ("get_in", 4, b"C1", None),
        ("get_in", 2, b"C1", None),
    ]


def test_the_direct_path_uses_each_event_s_own_position() -> None:
    store = DirectStore()
    access = TableAccess(UntouchableTable(store))
    later, earlier = event(1, 40, "a"), event(3, 7, "b")
    access.put(later, b"K1", b"x")
    access.put(earlier, b"K2", b"y")  # an earlier event written after a later one
    assert [c[1:3] for c in store.calls] == [(TP("a", 1), 40), (TP("b", 3), 7)]


def test_the_direct_path_prefetches_through_the_store() -> None:
    store = DirectStore()
    access = TableAccess(UntouchableTable(store))
    access.prefetch({0: [b"A", b"B"], 5: (k for k in [b"C"])})
    access.prefetch({})  # nothing to load: no call
    assert store.calls == [("prefetch", {0: [b"A", b"B"], 5: [b"C"]})]


# --- TableAccess: through the Faust table --------------------------------------------------


def table_with(data: Any) -> tuple[Recorder, TableDouble]:
    recorder = Recorder()
    table = TableDouble(recorder)
    table.data = data
    return recorder, table


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(DirectStore(uses_changelog=True), id="redis-with-changelog"),
        pytest.param(Store(), id="store-without-put_at"),
        pytest.param(object(), id="store-without-anything"),
    ],
)
def test_other_stores_go_through_the_table_with_the_event_current(data: Any) -> None:
    recorder, table = table_with(data)
    access = TableAccess(table)
    assert not access.direct

    e = event(partition=2, offset=9)
    assert current_event() is None
    access.put(e, b"C1", b"state-1")
    assert current_event() is None  # restored after the call
    assert access.get(e, b"C1") == b"state-1"
    assert current_event() is None
    assert access.get(event(partition=1, offset=10), b"C1") is None

    assert recorder.writes() == [Write(2, b"C1", b"state-1", e)]
    assert [(p, k) for p, k, _ in table.reads] == [(2, b"C1"), (1, b"C1")]
    assert table.reads[0][2] is e  # the event was current inside the table's get
    if isinstance(data, DirectStore):
        assert data.calls == []  # its direct calls would skip the changelog


def test_a_store_with_put_at_but_no_uses_changelog_is_not_used_directly() -> None:
    class Unknown(DirectStore):
        pass

    store = Unknown()
    del store.uses_changelog  # whether it writes a changelog is unknown: assume it does
    recorder, table = table_with(store)
    access = TableAccess(table)
    assert not access.direct
    access.put(event(0, 1), b"K", b"v")
    assert len(recorder.writes()) == 1
    assert store.calls == []


def test_an_outer_current_event_is_restored_after_each_call() -> None:
    recorder, table = table_with(Store())
    access = TableAccess(table)
    outer = cast("EventT[Any]", Event(b"outer", None, PositionedMessage("transactions", 0, 99)))
    token = set_current_event(outer)
    try:
        e = event(partition=1, offset=3)
        access.put(e, b"C", b"v")
        assert current_event() is outer
        assert access.get(e, b"C") == b"v"
        assert current_event() is outer
        assert recorder.writes()[0].event is e
        assert table.reads[0][2] is e
    finally:
        restore_current_event(token)
    assert current_event() is None


def test_the_current_event_is_restored_when_the_table_fails() -> None:
    table = FailingTable(Recorder())
    access = TableAccess(table)
    e = event(partition=1, offset=3)
    with pytest.raises(RuntimeError, match="write failed"):
        access.put(e, b"C", b"v")
    assert current_event() is None
    with pytest.raises(RuntimeError, match="read failed"):
        access.get(e, b"C")
    assert current_event() is None
    assert table.seen == [e, e]


def test_prefetch_goes_to_a_store_that_has_it_even_through_the_table() -> None:
    store = DirectStore(uses_changelog=True)
    _, table = table_with(store)
    TableAccess(table).prefetch({1: [b"K"]})
    assert store.calls == [("prefetch", {1: [b"K"]})]

    plain = Store()
    _, table = table_with(plain)
    access = TableAccess(table)
    access.prefetch({3: [b"A", b"B"]})
    access.prefetch({})
    assert plain.prefetched == [{3: [b"A", b"B"]}]


def test_prefetch_is_a_no_op_on_a_store_without_it() -> None:
    recorder = Recorder()
    table = TableDouble(recorder, prefetch=False)
    access = TableAccess(table)
    assert not hasattr(table.data, "prefetch")
    access.prefetch({0: [b"A"]})
    access.prefetch({})
    assert recorder.log == []
    assert table.reads == []


# --- DecodedStates: take and keep -----------------------------------------------------------


def test_take_reuses_the_kept_state_only_for_the_identical_bytes_object() -> None:
    states = DecodedStates("customer")
    state = customer_state(3)
    raw = state.to_bytes()
    states.keep(0, b"C1", raw, state)
    assert states.take(0, b"C1", raw) is state

    states.keep(0, b"C1", raw, state)
    copy = distinct_copy(raw)
    fresh = states.take(0, b"C1", copy)
    assert fresh is not state  # decoded afresh: equal bytes are not proof enough
    assert fresh == state
    assert fresh.to_bytes() == raw


def test_take_removes_the_entry() -> None:
    states = DecodedStates("customer")
    state = customer_state(2)
    raw = state.to_bytes()
    states.keep(0, b"C1", raw, state)
    assert len(states) == 1
    assert states.take(0, b"C1", raw) is state
    assert len(states) == 0
    again = states.take(0, b"C1", raw)  # the same bytes object, but nothing kept now
    assert again is not state
    assert again == state


def test_a_take_that_decodes_also_removes_the_stale_entry() -> None:
    states = DecodedStates("customer")
    state = customer_state(2)
    raw = state.to_bytes()
    states.keep(0, b"C1", raw, state)
    other = customer_state(4).to_bytes()
    assert states.take(0, b"C1", other) == EntityState.from_bytes(other)
    assert len(states) == 0
    assert states.take(0, b"C1", raw) is not state


def test_take_of_an_absent_entry_gives_an_empty_state() -> None:
    states = DecodedStates("customer")
    assert states.take(0, b"C1", None) == EntityState()
    state = customer_state(1)
    states.keep(0, b"C1", state.to_bytes(), state)
    assert states.take(0, b"C1", None) == EntityState()  # deleted since: not the kept one
    assert len(states) == 0


def test_keep_then_take_round_trips_the_changed_state() -> None:
    windows = OnlineFeatures(DEFAULT_FEATURES).entities[Entity.CUSTOMER]
    states = DecodedStates("customer")
    raw = customer_state(2).to_bytes()

    state = states.take(1, b"C9", raw)
    for round_ in range(3):
        windows.record(state, T0 + (10 + round_) * SECOND, 5.0, "T7")
        written = state.to_bytes()
        states.keep(1, b"C9", written, state)
        taken = states.take(1, b"C9", written)
        assert taken is state
        assert EntityState.from_bytes(written) == taken
    assert len(state) == 5


def test_entries_are_kept_per_partition_and_key() -> None:
    states = DecodedStates("customer")
    state = customer_state(2)
    raw = state.to_bytes()
    states.keep(0, b"C1", raw, state)
    assert states.take(1, b"C1", raw) is not state  # same key, another partition
    assert states.take(0, b"C2", raw) is not state  # same partition, another key
    assert states.take(0, b"C1", raw) is state


# --- DecodedStates: read_only ----------------------------------------------------------------


def test_read_only_reuses_the_kept_state_for_equal_bytes() -> None:
    states = DecodedStates("terminal")
    state = customer_state(3)
    raw = state.to_bytes()
    states.keep(2, b"T1", raw, state)
    assert states.read_only(2, b"T1", raw) is state
    assert states.read_only(2, b"T1", distinct_copy(raw)) is state
    assert len(states) == 1  # read_only does not remove


def test_read_only_decodes_and_keeps_other_bytes() -> None:
    states = DecodedStates("terminal")
    state = customer_state(3)
    states.keep(2, b"T1", state.to_bytes(), state)

    newer = customer_state(5).to_bytes()
    decoded = states.read_only(2, b"T1", newer)
    assert decoded is not state
    assert decoded == EntityState.from_bytes(newer)
    assert states.read_only(2, b"T1", distinct_copy(newer)) is decoded  # kept in its place
    assert len(states) == 1


def test_read_only_of_an_unknown_entry_decodes_it_once() -> None:
    states = DecodedStates("terminal")
    raw = customer_state(2).to_bytes()
    first = states.read_only(0, b"T1", raw)
    assert first == EntityState.from_bytes(raw)
    assert len(states) == 1
    assert states.read_only(0, b"T1", distinct_copy(raw)) is first


def test_read_only_of_an_absent_entry_is_empty_and_keeps_nothing() -> None:
    states = DecodedStates("terminal")
    assert states.read_only(0, b"T1", None) == EntityState()
    assert len(states) == 0

    state = customer_state(2)
    raw = state.to_bytes()
    states.keep(0, b"T2", raw, state)
    assert states.read_only(0, b"T2", None) == EntityState()
    assert len(states) == 1
    assert states.read_only(0, b"T2", raw) is state  # the kept entry is untouched


# --- DecodedStates: unreadable states and the limit -----------------------------------------


@pytest.mark.parametrize("how", ["take", "read_only"])
def test_an_unreadable_state_reads_as_empty_and_is_logged(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    states = DecodedStates("customer")
    garbage = b"\x01garbage"
    good = customer_state(2)
    states.keep(0, b"C1", good.to_bytes(), good)
    state = getattr(states, how)(0, b"C1", garbage)
    assert state == EntityState()
    assert state is not good
    assert "unreadable state" in caplog.text
    assert "customer" in caplog.text
    truncated = good.to_bytes()[:-1]
    assert getattr(states, how)(0, b"C2", truncated) == EntityState()


@pytest.mark.parametrize("limit", [1, 5, 20, 100])
def test_the_limit_holds_and_the_newest_entries_survive(limit: int) -> None:
    states = DecodedStates("customer", limit=limit)
    kept: list[tuple[bytes, bytes, EntityState]] = []
    for i in range(3 * limit + 7):
        state = customer_state(1, start_ms=T0 + i * SECOND)
        raw = state.to_bytes()
        key = f"C{i}".encode()
        states.keep(i % 3, key, raw, state)
        kept.append((key, raw, state))
        assert 0 < len(states) <= limit

    # After a drop of the oldest tenth (at least one), one more is kept.
    surviving = limit - max(1, limit // 10) + 1
    assert len(states) >= surviving
    for i, (key, raw, state) in enumerate(kept):
        taken = states.take(i % 3, key, raw)
        if i >= len(kept) - surviving:
            assert taken is state, (i, key)
        if i < len(kept) - limit:
            assert taken is not state, (i, key)  # dropped long ago
        assert taken == state


def test_a_taken_and_kept_again_entry_counts_as_new() -> None:
    limit = 10
    states = DecodedStates("customer", limit=limit)
    raws: dict[bytes, bytes] = {}
    kept: dict[bytes, EntityState] = {}
    for i in range(limit):
        key = f"C{i}".encode()
        kept[key] = customer_state(1, start_ms=T0 + i * SECOND)
        raws[key] = kept[key].to_bytes()
        states.keep(0, key, raws[key], kept[key])
    # The agents' cycle on the oldest entry: take, change, keep under the new bytes.
    taken = states.take(0, b"C0", raws[b"C0"])
    assert taken is kept[b"C0"]
    raws[b"C0"] = taken.to_bytes()
    states.keep(0, b"C0", raws[b"C0"], taken)
    # Full: the next keep drops the oldest tenth, C1 (C0 was kept again since).
    state = customer_state(1, start_ms=T0 + 99 * SECOND)
    states.keep(0, b"C99", state.to_bytes(), state)
    assert len(states) <= limit
    assert states.take(0, b"C1", raws[b"C1"]) is not kept[b"C1"]
    assert states.take(0, b"C0", raws[b"C0"]) is taken
    assert states.take(0, b"C2", raws[b"C2"]) is kept[b"C2"]
