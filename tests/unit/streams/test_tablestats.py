"""streams.tablestats: in-memory table entries and Redis availability, read on scrape."""

from __future__ import annotations

import math

import faust
from faust.types import TP
from prometheus_client import CollectorRegistry

from streams.metrics import PipelineMetrics
from streams.tablestats import observe_tables, redis_down_since, waiting_on_redis
from streams.tablestore import MemoryPartitionStore, RedisStore
from streams.tablestore.backend import Client, RedisBackend
from streams.tablestore.cache import WriteBackCache
from streams.tablestore.fausttable import partition_store_of


def never_connects() -> Client:
    raise AssertionError("no Redis call in these tests")


class Store(RedisStore):
    """A redis:// store as far as the gauges read it: its cache and its backend."""

    def __init__(self) -> None:  # no app, no table: the gauges read nothing else
        self.cache = WriteBackCache()
        self.backend = RedisBackend(never_connects, ttl_ms=1000, description="test")


def value(metrics: PipelineMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_only_a_redis_store_waits_on_redis() -> None:
    redis_store = Store()
    assert waiting_on_redis(redis_store) is False
    assert redis_down_since(redis_store) is None
    redis_store.backend._backoff.failed(ConnectionError("refused"))
    assert waiting_on_redis(redis_store) is True
    assert redis_down_since(redis_store) is not None
    assert waiting_on_redis(MemoryPartitionStore()) is None
    assert redis_down_since(MemoryPartitionStore()) is None
    assert waiting_on_redis(object()) is None


def test_gauges_follow_the_stores_at_each_scrape() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    customers, terminals = Store(), Store()
    observe_tables(
        {"customer_windows": customers, "terminal_windows": terminals},
        metrics.table_entries,
        metrics.redis_available,
    )
    assert value(metrics, "fraudstream_table_entries", table="customer_windows") == 0
    assert value(metrics, "fraudstream_redis_available") == 1
    customers.cache.put(0, b"card", b"state")
    customers.cache.load(1, b"absent", None)  # a known absence is held in memory too
    terminals.backend._backoff.failed(ConnectionError("refused"))
    assert value(metrics, "fraudstream_table_entries", table="customer_windows") == 2
    assert value(metrics, "fraudstream_table_entries", table="terminal_windows") == 0
    assert value(metrics, "fraudstream_redis_available") == 0
    terminals.backend._backoff.succeeded()
    assert value(metrics, "fraudstream_redis_available") == 1


def test_without_redis_availability_stays_unknown() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    store = MemoryPartitionStore()
    observe_tables({"t": store}, metrics.table_entries, metrics.redis_available)
    assert math.isnan(value(metrics, "fraudstream_redis_available") or 0)
    assert value(metrics, "fraudstream_table_entries", table="t") == 0
    store.put_at(TP("source", 0), 1, b"k", b"v")
    assert value(metrics, "fraudstream_table_entries", table="t") == 1


def test_a_memory_tables_entries_are_all_its_entries() -> None:
    app = faust.App("unit-tablestats", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=2)
    metrics = PipelineMetrics(CollectorRegistry())
    observe_tables({"t": partition_store_of(table)}, metrics.table_entries, metrics.redis_available)
    table.data[b"k"] = b"v"  # where Faust's memory:// store keeps them
    table.data[b"j"] = b"w"
    assert value(metrics, "fraudstream_table_entries", table="t") == 2
