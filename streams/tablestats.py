"""What the tables hold in memory and whether their Redis answers, read at each scrape.

``fraudstream_table_entries{table}`` is the number of entries a table keeps in the
worker's memory: the redis:// store's write-back cache (bounded by its
``cache_entries`` option: the gauge near that bound means reads start going to Redis),
or every entry of a memory:// table. It is not the table's size in Redis: counting
those keys takes a SCAN of the keyspace, too dear for every scrape; a census every few
minutes, in a thread, gives entries and bytes in Redis (``streams.tablecensus``).

``fraudstream_redis_available`` is 0 while the store is waiting on Redis: its last call
failed and none has succeeded since (the store retries with backoff, and the worker
processes and acknowledges nothing meanwhile); 1 otherwise; NaN with no Redis-backed
table. A worker with nothing to write makes no calls, so an outage shows from the next
flush or read that needs Redis.

Both are gauges whose value a function computes when ``/metrics`` is served, in a
thread of the web server (``streams.webserver``), with plain attribute reads and
``len()``: nothing is done between scrapes, and a scrape answers while the event loop
waits on Redis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from prometheus_client import Gauge

from streams.tablestore import RedisStore
from streams.tablestore.partition_store import PartitionStore


def waiting_on_redis(store: object) -> bool | None:
    """Whether a redis:// store is in an outage, or None for a store without Redis.

    Reads the backend's outage state (``RedisBackend.in_outage``); read only, the
    backend decides when an outage starts and ends.
    """
    if not isinstance(store, RedisStore):
        return None
    return store.backend.in_outage


def redis_down_since(store: object) -> float | None:
    """When a redis:// store's current outage began (monotonic seconds), or None.

    None for a store without Redis, or while its Redis answers. Reads the backend's
    outage state (``RedisBackend.down_since``) without changing it: a plain attribute
    read, safe from the web server's threads.
    """
    if not isinstance(store, RedisStore):
        return None
    return store.backend.down_since


def observe_tables(
    stores: Mapping[str, PartitionStore], entries: Gauge, redis_available: Gauge
) -> None:
    """Make ``entries`` (labelled ``table``) and ``redis_available`` read ``stores`` on scrape.

    Args:
        stores: The tables' stores, by table name.
        entries: ``fraudstream_table_entries``.
        redis_available: ``fraudstream_redis_available``.
    """
    for table, store in stores.items():
        entries.labels(table=table).set_function(_safe(store.entries_in_memory))
    redis = [store for store in stores.values() if isinstance(store, RedisStore)]
    if redis:

        def available() -> float:
            return 0.0 if any(waiting_on_redis(store) for store in redis) else 1.0

        redis_available.set_function(_safe(available))


def _safe(read: Callable[[], float | int | None]) -> Callable[[], float]:
    """``read`` as a gauge function: NaN rather than a failed scrape if it raises."""

    def value() -> float:
        try:
            result = read()
        except Exception:
            return math.nan
        return math.nan if result is None else float(result)

    return value
