"""How much each table holds in Redis: a census every few minutes, off the event loop.

``fraudstream_table_stored_entries{table}`` and ``fraudstream_table_stored_bytes{table}``
count the entries of the table partitions this worker owns, and their bytes (keys plus
values: Redis adds its own overhead per key, about 50-70 bytes for short strings).
Summed over the workers they give the table's size; entries expire after the store's
``ttl`` of inactivity, so the numbers follow the active cards and terminals, not every
one ever seen. ``fraudstream_table_census_seconds{table}`` is how long the last census
took.

Counting takes a SCAN of Redis's whole keyspace (the layout keeps each partition's keys
under one hash tag, not in one structure that knows its size; a counter in the flush
script would not see expiries) and a STRLEN per entry, pipelined by the thousand. So it
runs every ``FRAUDSTREAM_TABLE_CENSUS_INTERVAL_S`` (0: never), in a thread, one table
after the other, never during a rebalance. A census that fails (Redis down) leaves the
last values; the next one counts again. The table entries in the worker's memory are
``fraudstream_table_entries`` (``streams.tablestats``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Final

from prometheus_client import Gauge

from streams.tablestore import RedisStore

logger = logging.getLogger(__name__)

#: Seconds after the worker starts before the first census (its partitions claimed).
FIRST_CENSUS_S: Final = 30.0
#: Seconds to wait before trying again when a rebalance is under way.
REBALANCE_RETRY_S: Final = 5.0


async def take_censuses(
    stores: Mapping[str, object],
    *,
    entries: Gauge,
    size: Gauge,
    seconds: Gauge,
    interval_s: float,
    rebalancing: Callable[[], bool],
    first_s: float = FIRST_CENSUS_S,
) -> None:
    """Count the Redis-backed tables' entries and bytes every ``interval_s``, forever.

    Args:
        stores: The tables' stores, by table name (those not in Redis are skipped).
        entries: ``fraudstream_table_stored_entries``, labelled ``table``.
        size: ``fraudstream_table_stored_bytes``, labelled ``table``.
        seconds: ``fraudstream_table_census_seconds``, labelled ``table``.
        interval_s: Seconds between censuses; 0 or less: none.
        rebalancing: Whether a rebalance is under way (owned partitions are changing).
        first_s: Seconds before the first census.
    """
    counted = {name: store for name, store in stores.items() if isinstance(store, RedisStore)}
    if interval_s <= 0 or not counted:
        return
    delay = min(first_s, interval_s)
    while True:
        await asyncio.sleep(delay)
        if rebalancing():
            delay = REBALANCE_RETRY_S
            continue
        delay = interval_s
        for table, store in counted.items():
            started = time.monotonic()
            try:
                keys, total = await asyncio.to_thread(store.stored_sizes)
            except Exception as exc:  # an outage is reported elsewhere; count next time
                logger.debug("census of table %s skipped: %r", table, exc)
                continue
            entries.labels(table=table).set(keys)
            size.labels(table=table).set(total)
            seconds.labels(table=table).set(time.monotonic() - started)
