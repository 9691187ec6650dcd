"""One suite for every `PartitionStore`: the contract of streams/tablestore/partition_store.py.

`PartitionStoreContract` holds the checks; a test module per store subclasses it and
gives the fixture ``open_store``: each call opens a new store of the same table, over
the same durable copy, as another worker would.

- tests/unit/tablestore/test_partition_store_conformance.py: ``MemoryPartitionStore``;
- tests/integration/tablestore/test_redis_store_conformance.py: ``RedisStore`` against
  the real redis-server, a key namespace of its own per test.

Each check writes through the protocol and reads through the protocol only, so a store
that breaks one clause of the contract fails the check named after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from faust.types import TP

from streams.tablestore.partition_store import PartitionStore

#: Opens a store of the test's table (a new one each call: another worker's).
OpenStore = Callable[[], PartitionStore]

SOURCE = "transactions"


def tp(partition: int, topic: str = SOURCE) -> TP:
    """A source partition; it writes the table partition of the same number."""
    return TP(topic, partition)


class PartitionStoreContract:
    """The checks; subclasses provide the fixture ``open_store`` (an `OpenStore`)."""

    # --- get_in and put_at ----------------------------------------------------------------

    async def test_a_write_is_read_back_in_its_partition_only(self, open_store: OpenStore) -> None:
        store = open_store()
        store.put_at(tp(1), 10, b"C1", b"one")
        store.put_at(tp(2), 4, b"C1", b"two")
        store.put_at(tp(1), 11, b"C2", b"three")

        assert store.get_in(1, b"C1") == b"one"
        assert store.get_in(2, b"C1") == b"two"
        assert store.get_in(1, b"C2") == b"three"
        assert store.get_in(0, b"C1") is None  # never written there
        assert store.get_in(2, b"C2") is None

    async def test_partitions_stay_apart_whatever_their_numbers(
        self, open_store: OpenStore
    ) -> None:
        writer = open_store()
        for partition in (1, 11, 0, 10):
            writer.put_at(tp(partition), 1, b"K", f"in {partition}".encode())
        writer.put_at(tp(1), 2, b"1K", b"1K in 1")  # "1" + "1K" spells "11" + "K"
        await writer.flush()

        reader = open_store()
        assert [reader.get_in(p, b"K") for p in (0, 1, 10, 11)] == [
            b"in 0",
            b"in 1",
            b"in 10",
            b"in 11",
        ]
        assert reader.get_in(2, b"K") is None
        assert reader.peek({1: [b"1K"], 11: [b"K", b"1K"]}) == {
            1: [b"1K in 1"],
            11: [b"in 11", None],
        }

    async def test_the_last_write_wins_none_deletes_and_empty_is_a_value(
        self, open_store: OpenStore
    ) -> None:
        store = open_store()
        store.put_at(tp(0), 1, b"K", b"v1")
        store.put_at(tp(0), 2, b"K", b"v2")
        assert store.get_in(0, b"K") == b"v2"
        store.put_at(tp(0), 3, b"K", None)
        assert store.get_in(0, b"K") is None
        store.put_at(tp(0), 4, b"E", b"")
        assert store.get_in(0, b"E") == b""
        await store.flush()

        reader = open_store()
        assert reader.get_in(0, b"K") is None
        assert reader.get_in(0, b"E") == b""
        assert reader.peek({0: [b"E", b"K"]}) == {0: [b"", None]}

    # --- flush --------------------------------------------------------------------------

    async def test_writes_reach_other_stores_only_once_flushed(self, open_store: OpenStore) -> None:
        writer, reader = open_store(), open_store()
        writer.put_at(tp(1), 5, b"C1", b"v1")
        writer.put_at(tp(2), 8, b"C2", b"v2")
        assert reader.peek({1: [b"C1"], 2: [b"C2"]}) == {1: [None], 2: [None]}
        assert open_store().get_in(1, b"C1") is None

        await writer.flush()

        assert reader.peek({1: [b"C1"], 2: [b"C2"]}) == {1: [b"v1"], 2: [b"v2"]}
        assert open_store().get_in(1, b"C1") == b"v1"
        assert open_store().get_in(2, b"C2") == b"v2"
        # The writer's own reads are as before.
        assert writer.get_in(1, b"C1") == b"v1"
        assert writer.peek({2: [b"C2"]}) == {2: [b"v2"]}

    async def test_a_flushed_deletion_removes_the_durable_entry(
        self, open_store: OpenStore
    ) -> None:
        writer = open_store()
        writer.put_at(tp(3), 1, b"C1", b"v1")
        writer.put_at(tp(3), 2, b"C2", b"v2")
        await writer.flush()
        writer.put_at(tp(3), 3, b"C1", None)
        assert open_store().get_in(3, b"C1") == b"v1"  # not flushed yet

        await writer.flush()

        reader = open_store()
        assert reader.get_in(3, b"C1") is None
        assert reader.get_in(3, b"C2") == b"v2"

    async def test_a_flush_with_nothing_written_changes_nothing(
        self, open_store: OpenStore
    ) -> None:
        store = open_store()
        await store.flush()
        assert store.stored_offsets(0) == {}
        store.put_at(tp(0), 7, b"K", b"v")
        await store.flush()
        await store.flush()
        reader = open_store()
        assert reader.get_in(0, b"K") == b"v"
        assert reader.stored_offsets(0) == {tp(0): 8}

    # --- peek ---------------------------------------------------------------------------

    async def test_peek_reads_any_partition_in_the_order_asked(self, open_store: OpenStore) -> None:
        writer = open_store()
        writer.put_at(tp(0), 1, b"A", b"a0")
        writer.put_at(tp(2), 1, b"A", b"a2")
        writer.put_at(tp(2), 2, b"B", b"b2")
        await writer.flush()

        found = open_store().peek({2: [b"B", b"missing", b"A", b"B"], 0: [b"A"], 1: []})
        assert found == {2: [b"b2", None, b"a2", b"b2"], 0: [b"a0"], 1: []}
        assert open_store().peek({}) == {}

    async def test_peek_serves_this_stores_unflushed_writes_first(
        self, open_store: OpenStore
    ) -> None:
        owner, other = open_store(), open_store()
        owner.put_at(tp(1), 1, b"K", b"old")
        owner.put_at(tp(1), 2, b"D", b"kept")
        await owner.flush()
        owner.put_at(tp(1), 3, b"K", b"new")
        owner.put_at(tp(1), 4, b"D", None)
        owner.put_at(tp(1), 5, b"N", b"fresh")

        assert owner.peek({1: [b"K", b"D", b"N"]}) == {1: [b"new", None, b"fresh"]}
        assert other.peek({1: [b"K", b"D", b"N"]}) == {1: [b"old", b"kept", None]}

    async def test_peek_keeps_nothing_for_later_reads(self, open_store: OpenStore) -> None:
        reader, writer = open_store(), open_store()
        assert reader.peek({1: [b"K"], 4: [b"L"]}) == {1: [None], 4: [None]}
        writer.put_at(tp(1), 9, b"K", b"written since")
        writer.put_at(tp(4), 2, b"L", b"v1")
        await writer.flush()

        assert reader.peek({1: [b"K"], 4: [b"L"]}) == {1: [b"written since"], 4: [b"v1"]}
        writer.put_at(tp(4), 3, b"L", b"v2")
        await writer.flush()
        assert reader.peek({4: [b"L"]}) == {4: [b"v2"]}  # afresh: not the first answer
        assert reader.get_in(1, b"K") == b"written since"  # never read by get_in before

    # --- prefetch -----------------------------------------------------------------------

    async def test_prefetched_entries_are_those_get_in_reads(self, open_store: OpenStore) -> None:
        writer = open_store()
        writer.put_at(tp(1), 1, b"A", b"a")
        writer.put_at(tp(2), 1, b"B", b"b")
        await writer.flush()

        store = open_store()
        store.prefetch({1: iter([b"A", b"A", b"missing"]), 2: [b"B"], 3: []})
        store.prefetch({})
        assert store.get_in(1, b"A") == b"a"
        assert store.get_in(1, b"missing") is None
        assert store.get_in(2, b"B") == b"b"
        assert store.get_in(2, b"A") is None

    async def test_a_prefetch_never_hides_this_stores_own_write(
        self, open_store: OpenStore
    ) -> None:
        writer = open_store()
        writer.put_at(tp(1), 1, b"K", b"flushed")
        writer.put_at(tp(1), 2, b"D", b"flushed")
        await writer.flush()

        store = open_store()
        store.put_at(tp(1), 3, b"K", b"mine")
        store.put_at(tp(1), 4, b"D", None)
        store.prefetch({1: [b"K", b"D"]})
        assert store.get_in(1, b"K") == b"mine"
        assert store.get_in(1, b"D") is None

    # --- offsets ------------------------------------------------------------------------

    async def test_a_flush_records_the_offset_after_the_highest_one_written(
        self, open_store: OpenStore
    ) -> None:
        store = open_store()
        store.put_at(tp(1), 10, b"C1", b"one")
        store.put_at(tp(1), 11, b"C2", b"two")
        store.put_at(tp(2), 3, b"C3", b"three")
        store.put_at(tp(2, "other-topic"), 40, b"C4", b"four")
        await store.flush()

        reader = open_store()
        assert reader.stored_offsets(1) == {tp(1): 12}
        assert reader.stored_offsets(2) == {tp(2): 4, tp(2, "other-topic"): 41}
        assert reader.stored_offsets(0) == {}

        store.put_at(tp(1), 12, b"C1", None)
        await store.flush()
        assert reader.stored_offsets(1) == {tp(1): 13}

    async def test_an_earlier_offset_written_after_a_later_one_does_not_move_it_back(
        self, open_store: OpenStore
    ) -> None:
        store = open_store()
        store.put_at(tp(0), 20, b"late", b"x")
        store.put_at(tp(0), 15, b"early", b"y")
        store.put_at(tp(0), 18, b"late", b"z")
        await store.flush()

        reader = open_store()
        assert reader.stored_offsets(0) == {tp(0): 21}
        assert reader.get_in(0, b"early") == b"y"
        assert reader.get_in(0, b"late") == b"z"  # the last write wins, not the highest offset

    async def test_the_first_write_records_where_its_source_resumes_at_once(
        self, open_store: OpenStore
    ) -> None:
        store = open_store()
        store.put_at(tp(1), 10, b"C1", b"one")
        # Before any flush: the event itself, so that a crash now reads it again.
        assert store.stored_offsets(1) == {tp(1): 10}
        assert open_store().stored_offsets(1) == {tp(1): 10}
        store.put_at(tp(1), 11, b"C2", b"two")
        assert store.stored_offsets(1) == {tp(1): 10}  # unflushed writes do not move it
        await store.flush()
        assert store.stored_offsets(1) == {tp(1): 12}

    async def test_a_new_owner_keeps_the_offset_already_recorded(
        self, open_store: OpenStore
    ) -> None:
        first = open_store()
        first.put_at(tp(1), 10, b"C1", b"one")
        await first.flush()

        second = open_store()  # the partition's next owner
        second.put_at(tp(1), 11, b"C1", b"two")
        assert second.stored_offsets(1) == {tp(1): 11}  # not moved by the first write
        await second.flush()
        assert open_store().stored_offsets(1) == {tp(1): 12}

    async def test_note_position_records_where_a_held_source_resumes(
        self, open_store: OpenStore
    ) -> None:
        store = open_store()
        store.note_position(tp(1), 7)
        assert open_store().stored_offsets(1) == {tp(1): 7}
        store.note_position(tp(1), 9)  # held further: the recorded offset stays
        store.put_at(tp(1), 9, b"C1", b"v")
        assert open_store().stored_offsets(1) == {tp(1): 7}
        await store.flush()
        assert open_store().stored_offsets(1) == {tp(1): 10}
        store.note_position(tp(1), 30)  # covered by a write already: nothing
        assert open_store().stored_offsets(1) == {tp(1): 10}

    async def test_note_position_never_moves_an_offset_another_store_recorded(
        self, open_store: OpenStore
    ) -> None:
        owner = open_store()
        owner.put_at(tp(2), 20, b"C1", b"v")
        await owner.flush()

        later = open_store()
        later.note_position(tp(2), 3)
        later.note_position(tp(2, "other-topic"), 5)
        assert open_store().stored_offsets(2) == {tp(2): 21, tp(2, "other-topic"): 5}

    # --- keys ---------------------------------------------------------------------------

    async def test_binary_keys_with_glob_characters_match_only_themselves(
        self, open_store: OpenStore
    ) -> None:
        keys = [b"*", b"?", b"[ab]", b"a*", b"ab", b"b", b"\\*", b"\x00\xff", b"k:1", b"{1}"]
        writer = open_store()
        for i, key in enumerate(keys):
            writer.put_at(tp(1), i, key, b"value %d" % i)
        writer.put_at(tp(2), 0, b"*", b"star in 2")
        await writer.flush()

        reader = open_store()
        assert reader.peek({1: keys}) == {1: [b"value %d" % i for i in range(len(keys))]}
        assert [reader.get_in(1, key) for key in keys] == [b"value %d" % i for i in range(10)]
        assert reader.get_in(1, b"a") is None
        assert reader.get_in(1, b"ba") is None

        writer.put_at(tp(1), 20, b"*", None)
        writer.put_at(tp(1), 21, b"[ab]", None)
        await writer.flush()
        survivors = [key for key in keys if key not in (b"*", b"[ab]")]
        after = open_store().peek({1: keys, 2: [b"*"]})
        assert after[2] == [b"star in 2"]
        assert {k: v for k, v in zip(keys, after[1], strict=True) if v is not None} == {
            key: b"value %d" % keys.index(key) for key in survivors
        }

    # --- memory ---------------------------------------------------------------------------

    async def test_entries_in_memory_counts_at_least_the_unflushed_writes(
        self, open_store: OpenStore
    ) -> None:
        store = open_store()
        assert store.entries_in_memory() == 0
        for partition, key in _spread(4):
            store.put_at(tp(partition), 1, key, b"v")
        assert store.entries_in_memory() >= 4


def _spread(count: int) -> Iterator[tuple[int, bytes]]:
    """(partition, key) pairs over two partitions, each key once."""
    for i in range(count):
        yield i % 2, b"K%d" % i
