"""The write-back cache: reads, dirty tracking, snapshots, failed flushes, eviction."""

from __future__ import annotations

from streams.tablestore.cache import MISSING, WriteBackCache


def test_uncached_cached_and_known_absent_are_distinct() -> None:
    cache = WriteBackCache()
    assert cache.get(0, b"k") is MISSING
    cache.load(0, b"k", None)
    assert cache.get(0, b"k") is None
    cache.load(0, b"j", b"1")
    assert cache.get(0, b"j") == b"1"
    assert cache.get(1, b"j") is MISSING
    assert not cache.has_dirty()


def test_take_dirty_hands_over_writes_once() -> None:
    cache = WriteBackCache()
    cache.put(0, b"a", b"1")
    cache.put(1, b"b", b"2")
    cache.put(1, b"c", None)
    assert cache.take_dirty() == {0: {b"a": b"1"}, 1: {b"b": b"2", b"c": None}}
    assert cache.take_dirty() == {}
    assert cache.get(1, b"b") == b"2"  # still served from memory


def test_a_failed_flush_is_restored_without_overwriting_newer_writes() -> None:
    cache = WriteBackCache()
    cache.put(0, b"a", b"1")
    cache.put(0, b"b", b"1")
    snapshot = cache.take_dirty()
    cache.put(0, b"a", b"2")  # written again while the flush was under way
    cache.restore_dirty(snapshot)
    assert cache.take_dirty() == {0: {b"a": b"2", b"b": b"1"}}


def test_a_read_never_overwrites_a_pending_write() -> None:
    cache = WriteBackCache()
    cache.put(0, b"a", b"new")
    cache.load(0, b"a", b"old-from-redis")
    assert cache.get(0, b"a") == b"new"


def test_eviction_drops_only_clean_entries_oldest_first() -> None:
    cache = WriteBackCache()
    for i in range(5):
        cache.load(0, b"clean%d" % i, b"v")
    cache.put(0, b"dirty", b"v")
    assert cache.evict_clean(3) == 3
    assert cache.get(0, b"clean0") is MISSING
    assert cache.get(0, b"clean2") is MISSING
    assert cache.get(0, b"clean3") == b"v"
    assert cache.get(0, b"dirty") == b"v"
    assert len(cache) == 3
    assert cache.evict_clean(0) == 2  # dirty entries stay whatever the bound
    assert cache.get(0, b"dirty") == b"v"


def test_drop_partition_forgets_it() -> None:
    cache = WriteBackCache()
    cache.put(2, b"a", b"1")
    cache.drop_partition(2)
    assert cache.get(2, b"a") is MISSING
    assert cache.partitions() == []
