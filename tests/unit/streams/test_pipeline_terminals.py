"""Terminal partitions, replay-mark keys, and batched terminal reads."""

from __future__ import annotations

import random
import re

import faust
import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st
from pipeline_doubles import PeekStore

from features.online import EntityState, EntityWindows
from features.spec import DEFAULT_FEATURES, Entity
from streams.contracts import ID_PATTERN
from streams.pipeline import terminals
from streams.pipeline.terminals import (
    KeyPartitioner,
    TerminalLookup,
    mark_key,
    terminal_partition,
)
from streams.tablestore.fausttable import partition_store_of

PARTITION_COUNTS = (1, 3, 6, 7)
T0 = 1_700_000_000_000
DAY = 86_400_000


def random_keys(count: int, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
    keys = [f"T{i}".encode() for i in range(200)]
    keys += ["".join(rng.choices(alphabet, k=rng.randint(1, 64))).encode() for _ in range(count)]
    keys += [rng.randbytes(rng.randint(0, 40)) for _ in range(count)]  # any bytes at all
    return keys


def kafka_partition(key: bytes, partitions: int) -> int:
    everything = list(range(partitions))
    partition: int = DefaultPartitioner()(key, everything, everything)
    return partition


# --- partitions --------------------------------------------------------------------------


@pytest.mark.parametrize("partitions", PARTITION_COUNTS)
def test_terminal_partition_is_the_default_kafka_partitioner(partitions: int) -> None:
    keys = random_keys(1000)
    got = [terminal_partition(k, partitions) for k in keys]
    assert got == [kafka_partition(k, partitions) for k in keys]
    if partitions > 1:
        assert set(got) == set(range(partitions))  # the keys spread over all of them


@given(key=st.binary(max_size=80), partitions=st.sampled_from(PARTITION_COUNTS))
def test_terminal_partition_matches_kafka_for_any_key(key: bytes, partitions: int) -> None:
    assert terminal_partition(key, partitions) == kafka_partition(key, partitions)


@pytest.mark.parametrize("partitions", PARTITION_COUNTS)
def test_the_memo_gives_the_same_answers_twice(partitions: int) -> None:
    partition_of = KeyPartitioner(partitions)
    keys = random_keys(300, seed=partitions)
    first = [partition_of(k) for k in keys]
    again = [partition_of(k) for k in reversed(keys)][::-1]
    expected = [kafka_partition(k, partitions) for k in keys]
    assert first == expected
    assert again == expected


def test_the_memo_stays_bounded_and_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(terminals, "_MEMO_SIZE", 5)
    partition_of = KeyPartitioner(7)
    keys = random_keys(50, seed=9)
    for key in keys + keys:
        assert partition_of(key) == kafka_partition(key, 7)
        assert len(partition_of._memo) <= 5


# --- replay marks -------------------------------------------------------------------------


def test_mark_keys_are_distinct_and_never_an_id() -> None:
    id_pattern = re.compile(ID_PATTERN)
    keys = [mark_key(p, s) for p in range(48) for s in range(48)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert id_pattern.fullmatch(key.decode()) is None
        assert not id_pattern.fullmatch(key.decode("latin-1"))


@given(
    terminal_id=st.from_regex(ID_PATTERN, fullmatch=True),
    partition=st.integers(0, 10**6),
    source=st.integers(0, 10**6),
)
def test_no_id_is_a_mark_key(terminal_id: str, partition: int, source: int) -> None:
    assert terminal_id.encode() != mark_key(partition, source)


# --- the lookup ---------------------------------------------------------------------------


def terminal_state(*times: int, frauds: tuple[tuple[int, str], ...] = ()) -> EntityState:
    windows = EntityWindows(DEFAULT_FEATURES, Entity.TERMINAL)
    state = EntityState()
    for i, time_ms in enumerate(times):
        windows.record(state, time_ms, 10.0 + i, f"C{i}")
    for time_ms, tx_id in frauds:
        assert windows.record_fraud(state, time_ms, tx_id, time_ms + DAY)
    return state


@pytest.mark.parametrize("partitions", [1, 6])
def test_the_lookup_decodes_stored_states_in_one_peek_grouped_by_partition(partitions: int) -> None:
    store = PeekStore(partitions)
    stored = {
        b"T1": terminal_state(T0 - 9 * DAY, T0 - 8 * DAY, frauds=((T0 - 9 * DAY, "x1"),)),
        b"T2": terminal_state(T0 - DAY),
        b"T7": terminal_state(T0 - 3 * DAY, T0 - 2 * DAY, T0 - 2 * DAY),
    }
    for terminal, state in stored.items():
        store.put(terminal, state)
    lookup = TerminalLookup(store, partitions)
    asked = [b"T1", b"T9", b"T2", b"T1", b"T7", b"T9", b"T3"]

    states = lookup.states(asked)

    assert set(states) == set(asked)
    for terminal in asked:
        assert states[terminal] == stored.get(terminal, EntityState())
    assert states[b"T9"].watermark_ms is None
    assert len(states[b"T9"]) == 0
    assert len(store.asked) == 1
    request = store.asked[0]
    unique = list(dict.fromkeys(asked))
    assert sorted(k for keys in request.values() for k in keys) == sorted(unique)  # each once
    for partition, keys in request.items():
        assert all(terminal_partition(k, partitions) == partition for k in keys)
        assert keys == [k for k in unique if k in keys]  # in the order first asked
    assert lookup.partition_of(b"T7") == terminal_partition(b"T7", partitions)


def test_the_lookup_of_nothing_reads_nothing_much() -> None:
    store = PeekStore(3)
    assert TerminalLookup(store, 3).states([]) == {}
    assert store.asked in ([], [{}])


def test_a_corrupt_stored_state_is_logged_and_read_as_empty(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = PeekStore(3)
    store.put(b"T1", b"\x01garbage")
    assert TerminalLookup(store, 3).states([b"T1"]) == {b"T1": EntityState()}
    assert "unreadable state" in caplog.text


def test_the_lookup_finds_states_in_a_memory_store() -> None:
    app = faust.App("pipeline-unit-local-peek", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("terminal_windows", key_type=bytes, value_type=bytes, partitions=3)
    state = terminal_state(T0 - 8 * DAY)
    table.data[b"T1"] = state.to_bytes()  # where a memory:// table keeps its entries
    peek = partition_store_of(table)
    partition = terminal_partition(b"T1", 3)
    states = TerminalLookup(peek, 3).states([b"T1"])
    assert peek.peek({partition: [b"T1"]}) == {partition: [state.to_bytes()]}
    assert states[b"T1"] == state
