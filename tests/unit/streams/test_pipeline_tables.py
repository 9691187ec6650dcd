"""TableAccess (the event's position handed to the table's store) and DecodedStates.

Pure: ``MemoryPartitionStore``, the in-memory implementation of the stores' contract,
stands in for Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

import pytest
from faust.types import TP
from pipeline_doubles import Event, Message

from features.online import EntityState, OnlineFeatures
from features.spec import DEFAULT_FEATURES, Entity
from streams.pipeline.inputs import InputRecord
from streams.pipeline.tables import DecodedStates, TableAccess
from streams.tablestore import MemoryPartitionStore

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


def event(partition: int, offset: int, topic: str = "transactions") -> InputRecord:
    return cast("InputRecord", Event(b"k", b"v", Message(topic, partition, offset)))


class PrefetchRecorder(MemoryPartitionStore):
    """A MemoryPartitionStore that records the prefetches asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.prefetched: list[dict[int, list[bytes]]] = []

    def prefetch(self, partition_keys: Mapping[int, Iterable[bytes]]) -> None:
        self.prefetched.append({p: list(keys) for p, keys in partition_keys.items()})


# --- TableAccess -----------------------------------------------------------------------------


async def test_entries_are_read_and_written_in_the_events_partition() -> None:
    store = MemoryPartitionStore()
    access = TableAccess(store)

    e = event(partition=4, offset=17)
    access.put(e, b"C1", b"state-1")
    assert access.get(e, b"C1") == b"state-1"
    assert access.get(event(partition=2, offset=18), b"C1") is None  # another partition
    assert store.get_in(4, b"C1") == b"state-1"
    await store.flush()
    assert store.stored_offsets(4) == {TP("transactions", 4): 18}  # covers the event


async def test_each_write_carries_its_own_events_position() -> None:
    store = MemoryPartitionStore()
    access = TableAccess(store)
    access.put(event(1, 40, "a"), b"K1", b"x")
    access.put(event(3, 7, "b"), b"K2", b"y")
    access.put(event(1, 38, "a"), b"K3", b"z")  # an earlier event written after a later one
    await store.flush()
    assert store.stored_offsets(1) == {TP("a", 1): 41}
    assert store.stored_offsets(3) == {TP("b", 3): 8}


async def test_a_held_events_position_is_noted_before_any_write() -> None:
    store = MemoryPartitionStore()
    access = TableAccess(store)
    access.note_position(event(2, 30))
    assert store.stored_offsets(2) == {TP("transactions", 2): 30}
    access.put(event(2, 31), b"C", b"v")
    await store.flush()
    assert store.stored_offsets(2) == {TP("transactions", 2): 32}


def test_a_batch_prefetches_through_the_store_once_and_nothing_for_nothing() -> None:
    store = PrefetchRecorder()
    access = TableAccess(store)
    access.prefetch({0: [b"A", b"B"], 5: (k for k in [b"C"])})
    access.prefetch({})  # nothing to load: no call
    assert store.prefetched == [{0: [b"A", b"B"], 5: [b"C"]}]


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
