"""What the tables hold in memory and whether their Redis answers, read at each scrape.

``fraudstream_table_entries{table}`` is the number of entries a table keeps in the
worker's memory: the redis:// store's write-back cache (bounded by its
``cache_entries`` option: the gauge near that bound means reads start going to Redis),
or every entry of a memory:// table. It is not the table's size in Redis: counting
those keys takes a SCAN of every partition's prefix, too dear to run on the event loop
for a metric; docs/operations.md, "Sizing", gives bytes per card and per terminal instead.
Bytes are not exported for the same reason (a walk over every cached value).

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

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Gauge


def entries_in_memory(store: Any) -> int | None:
    """Entries a table store holds in memory, or None for a store of another kind."""
    cache = getattr(store, "cache", None)  # redis:// (streams.tablestore.WriteBackCache)
    if cache is not None:
        return len(cache)
    data = getattr(store, "data", None)  # memory:// keeps a dict
    if isinstance(data, dict):
        return len(data)
    return None


def waiting_on_redis(store: Any) -> bool | None:
    """Whether a redis:// store is in an outage, or None for a store without Redis.

    Reads the backend's outage state (``RedisBackend.in_outage``); read only, the
    backend decides when an outage starts and ends.
    """
    backend = getattr(store, "backend", None)
    if backend is None:
        return None
    return bool(getattr(backend, "in_outage", False))


def redis_down_since(store: Any) -> float | None:
    """When a redis:// store's current outage began (monotonic seconds), or None.

    None for a store without Redis, or while its Redis answers. Reads the backend's
    outage state (``RedisBackend.down_since``) without changing it: a plain attribute
    read, safe from the web server's threads.
    """
    since = getattr(getattr(store, "backend", None), "down_since", None)
    return since if isinstance(since, float) else None


def observe_tables(tables: Iterable[Any], entries: Gauge, redis_available: Gauge) -> None:
    """Make ``entries`` (labelled ``table``) and ``redis_available`` read ``tables`` on scrape.

    Args:
        tables: Faust tables (their ``data`` is the store).
        entries: ``fraudstream_table_entries``.
        redis_available: ``fraudstream_redis_available``.
    """
    tables = list(tables)
    stores = [table.data for table in tables]
    for table, store in zip(tables, stores, strict=True):
        if entries_in_memory(store) is not None:
            entries.labels(table=table.name).set_function(
                _safe(functools.partial(entries_in_memory, store))
            )
    if any(waiting_on_redis(store) is not None for store in stores):

        def available() -> float:
            outages = [waiting_on_redis(store) for store in stores]
            return 0.0 if any(outages) else 1.0

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
