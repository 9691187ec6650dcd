"""The PartitionStore contract suite (tests/tablestore_conformance.py) on RedisStore.

Against the real redis-server, under the test's own key namespace. Stores are made as
Faust makes them (``table.data`` of a table of a ``create_app`` app) and never started:
each call is a new app, as another worker's store would be; the suite flushes them
itself. The same suite runs on MemoryPartitionStore in
tests/unit/tablestore/test_partition_store_conformance.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from tablestore_conformance import OpenStore, PartitionStoreContract

from streams.settings import Settings
from streams.tablestore import RedisStore

TABLE = "conformance"
PARTITIONS = 12


class TestRedisStore(PartitionStoreContract):
    @pytest.fixture
    def open_store(
        self, settings: Settings, redis_client: redis.Redis, make_store: Callable[..., RedisStore]
    ) -> OpenStore:
        # redis_client deletes the test's keys once its stores are closed.
        return lambda: make_store(settings, TABLE, PARTITIONS, settings.redis_url)
