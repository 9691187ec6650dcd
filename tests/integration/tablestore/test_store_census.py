"""The census of a table in Redis (``streams.tablecensus``), against the real redis-server.

Stores are made as Faust makes them and never started (as in the conformance suite);
the partitions a worker owns are set as its rebalance would set them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest
import redis
from faust.types import TP
from prometheus_client import CollectorRegistry, Gauge

from streams.settings import Settings
from streams.tablecensus import take_censuses
from streams.tablestore import RedisStore
from streams.tablestore.keys import entry_key

PARTITIONS = 8


def _entries(partition: int) -> dict[bytes, bytes]:
    # Keys with glob and hash-tag characters: they must count in their partition only.
    return {
        f"C{partition}-{i}{'*[{}]/' if i % 3 == 0 else ''}".encode(): b"x" * (10 + i + partition)
        for i in range(25 + partition)
    }


async def _fill(store: RedisStore, partitions: range) -> None:
    for partition in partitions:
        for offset, (key, value) in enumerate(_entries(partition).items()):
            store.put_at(TP("transactions", partition), offset, key, value)
    await store.flush()


def _expected(store: RedisStore, partitions: set[int]) -> tuple[int, int]:
    keys = total = 0
    for partition in partitions:
        for key, value in _entries(partition).items():
            keys += 1
            total += len(entry_key(store.prefix(partition), key)) + len(value)
    return keys, total


async def test_a_census_counts_the_owned_partitions_entries_and_bytes_only(
    settings: Settings, redis_client: redis.Redis, make_store: Callable[..., RedisStore]
) -> None:
    store = make_store(settings, "census", PARTITIONS, settings.redis_url)
    other = make_store(settings, "census2", PARTITIONS, settings.redis_url)  # a name it prefixes
    await _fill(store, range(PARTITIONS))
    await _fill(other, range(PARTITIONS))

    assert store.stored_sizes() == (0, 0)  # owns nothing yet
    store._owned = {1, 4, 7}
    assert store.stored_sizes() == _expected(store, {1, 4, 7})
    store._owned = set(range(PARTITIONS))
    assert store.stored_sizes() == _expected(store, set(range(PARTITIONS)))

    # An entry deleted and flushed is gone from the count.
    first = next(iter(_entries(7)))
    store.put_at(TP("transactions", 7), 1000, first, None)
    await store.flush()
    keys, total = _expected(store, set(range(PARTITIONS)))
    gone = len(entry_key(store.prefix(7), first)) + len(_entries(7)[first])
    assert store.stored_sizes() == (keys - 1, total - gone)


async def test_censuses_set_the_gauges_and_skip_a_rebalance(
    settings: Settings, redis_client: redis.Redis, make_store: Callable[..., RedisStore]
) -> None:
    store = make_store(settings, "census", PARTITIONS, settings.redis_url)
    await _fill(store, range(3))
    store._owned = {0, 1, 2}
    registry = CollectorRegistry()
    entries, size, seconds = (
        Gauge(name, name, ["table"], registry=registry) for name in ("entries", "bytes", "seconds")
    )
    rebalancing = True

    task = asyncio.create_task(
        take_censuses(
            {"census": store, "not_redis": object()},
            entries=entries,
            size=size,
            seconds=seconds,
            interval_s=0.05,
            rebalancing=lambda: rebalancing,
            first_s=0.0,
        )
    )
    try:
        await asyncio.sleep(0.3)
        assert registry.get_sample_value("entries", {"table": "census"}) is None
        rebalancing = False
        for _ in range(200):  # 10 s at most
            if registry.get_sample_value("entries", {"table": "census"}) is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    want_keys, want_bytes = _expected(store, {0, 1, 2})
    assert registry.get_sample_value("entries", {"table": "census"}) == want_keys
    assert registry.get_sample_value("bytes", {"table": "census"}) == want_bytes
    took = registry.get_sample_value("seconds", {"table": "census"})
    assert took is not None
    assert took >= 0
    assert registry.get_sample_value("entries", {"table": "not_redis"}) is None


@pytest.mark.parametrize("interval_s", [0.0, -1.0])
async def test_no_census_when_turned_off(
    settings: Settings, make_store: Callable[..., RedisStore], interval_s: float
) -> None:
    store = make_store(settings, "census", PARTITIONS, settings.redis_url)
    registry = CollectorRegistry()
    gauge = Gauge("entries", "entries", ["table"], registry=registry)
    async with asyncio.timeout(1):  # returns at once
        await take_censuses(
            {"census": store},
            entries=gauge,
            size=gauge,
            seconds=gauge,
            interval_s=interval_s,
            rebalancing=lambda: False,
            first_s=0.0,
        )
