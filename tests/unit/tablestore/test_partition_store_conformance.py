"""The PartitionStore contract suite (tests/tablestore_conformance.py) on MemoryPartitionStore.

Every store of a test shares one MemoryTable, as the workers of one table share Redis.
The same suite runs on RedisStore in
tests/integration/tablestore/test_redis_store_conformance.py.
"""

from __future__ import annotations

import pytest
from tablestore_conformance import OpenStore, PartitionStoreContract

from streams.tablestore import MemoryPartitionStore, MemoryTable


class TestMemoryPartitionStore(PartitionStoreContract):
    @pytest.fixture
    def open_store(self) -> OpenStore:
        table = MemoryTable()
        return lambda: MemoryPartitionStore(table)
