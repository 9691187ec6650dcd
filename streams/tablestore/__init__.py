"""The ``redis://`` Faust table store: write-back cache, atomic flushes, exact recovery."""

from streams.tablestore.store import RedisStore, RedisStoreError
from streams.tablestore.table import Table

__all__ = ["RedisStore", "RedisStoreError", "Table"]
