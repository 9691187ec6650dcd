"""Table stores: the ``redis://`` Faust table store and the `PartitionStore` contract.

``redis://`` (``RedisStore``): write-back cache, atomic flushes, exact recovery. Every
store the agents use implements ``partition_store.PartitionStore``; ``memory`` holds the
same contract in process memory, ``fausttable`` adapts a table on Faust's ``memory://``.
"""

from streams.tablestore.memory import MemoryPartitionStore, MemoryTable
from streams.tablestore.partition_store import PartitionStore
from streams.tablestore.store import RedisStore, RedisStoreError
from streams.tablestore.table import Table

__all__ = [
    "MemoryPartitionStore",
    "MemoryTable",
    "PartitionStore",
    "RedisStore",
    "RedisStoreError",
    "Table",
]
