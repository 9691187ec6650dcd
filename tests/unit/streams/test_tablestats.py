"""streams.tablestats: in-memory table entries and Redis availability, read on scrape."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from streams.metrics import PipelineMetrics
from streams.tablestats import entries_in_memory, observe_tables, waiting_on_redis
from streams.tablestore.cache import WriteBackCache


@dataclass
class Backend:
    in_outage: bool = False


@dataclass
class RedisLikeStore:
    cache: WriteBackCache = field(default_factory=WriteBackCache)
    backend: Backend = field(default_factory=Backend)


@dataclass
class MemoryStore:
    data: dict[bytes, bytes] = field(default_factory=dict)


@dataclass
class Table:
    name: str
    data: Any


def value(metrics: PipelineMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_entries_are_the_redis_cache_or_the_memory_dict() -> None:
    redis_store = RedisLikeStore()
    redis_store.cache.put(0, b"a", b"1")
    redis_store.cache.load(1, b"b", None)
    assert entries_in_memory(redis_store) == 2
    assert entries_in_memory(MemoryStore({b"k": b"v"})) == 1
    assert entries_in_memory(object()) is None
    assert waiting_on_redis(MemoryStore()) is None
    assert waiting_on_redis(redis_store) is False


def test_gauges_follow_the_stores_at_each_scrape() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    customers, terminals = RedisLikeStore(), RedisLikeStore()
    observe_tables(
        [Table("customer_windows", customers), Table("terminal_windows", terminals)],
        metrics.table_entries,
        metrics.redis_available,
    )
    assert value(metrics, "fraudstream_table_entries", table="customer_windows") == 0
    assert value(metrics, "fraudstream_redis_available") == 1
    customers.cache.put(0, b"card", b"state")
    terminals.backend.in_outage = True
    assert value(metrics, "fraudstream_table_entries", table="customer_windows") == 1
    assert value(metrics, "fraudstream_redis_available") == 0
    terminals.backend.in_outage = False
    assert value(metrics, "fraudstream_redis_available") == 1


def test_without_redis_availability_stays_unknown() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    observe_tables([Table("t", MemoryStore())], metrics.table_entries, metrics.redis_available)
    assert math.isnan(value(metrics, "fraudstream_redis_available") or 0)
    assert value(metrics, "fraudstream_table_entries", table="t") == 0
