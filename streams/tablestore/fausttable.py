"""The `PartitionStore` of a Faust table: its ``redis://`` store, or the table adapted.

The agents read and write their tables through `PartitionStore` only
(``streams.pipeline.tables.TableAccess``, the terminal lookups). A table on ``redis://``
hands over its store, which implements the contract. A table on one of Faust's own
stores (``memory://``, a single worker in development) is seen through
`FaustTableStore`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from faust.types import TP

from streams.tablestore.partition_store import PartitionStore
from streams.tablestore.store import RedisStore
from streams.tablestore.table import send_to_changelog


def partition_store_of(table: Any) -> PartitionStore:
    """The `PartitionStore` the agents use for a Faust ``table`` with raw keys and values."""
    store = table.data
    if isinstance(store, RedisStore):
        return store
    return FaustTableStore(table)


class FaustTableStore:
    """A Faust table on Faust's ``memory://`` store, as a `PartitionStore` for one worker.

    Writes do what a write through the table does (``table[key] = value`` while the
    event is current): the changelog record in the event's partition, the sensors, the
    entry in the store; Faust recovers the table from its changelog when the worker
    starts. Where the contract asks more, one worker does not need it:

    - Faust's in-memory store keys entries by key alone, so the same key written in two
      partitions is one entry. The agents' keys never repeat across partitions: a
      customer or a terminal lives in the partition of its id, and the terminal
      table's bookkeeping keys name their partition
      (``streams.pipeline.terminals.mark_key``).
    - `peek` serves this worker's entries: with one worker, those of every partition.
    - Sources resume at the consumer group's committed offsets, as Faust commits them:
      this store records none (`stored_offsets` is empty, `note_position` does nothing),
      and `flush` has nothing to write.

    Args:
        table: A Faust table with raw (bytes) keys and values on ``memory://``.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        #: Faust's store: a mapping of the raw entries.
        self._entries = table.data

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        """The entry of ``key`` (whichever partition wrote it)."""
        value: bytes | None = self._entries.get(key)
        return value

    def prefetch(self, partition_keys: Mapping[int, Iterable[bytes]]) -> None:
        """Nothing to load: every entry is in memory."""

    def peek(self, partition_keys: Mapping[int, Sequence[bytes]]) -> dict[int, list[bytes | None]]:
        """This worker's entries of these keys, per partition, in the order asked."""
        entries = self._entries
        return {p: [entries.get(key) for key in keys] for p, keys in partition_keys.items()}

    def put_at(self, tp: TP, offset: int, key: bytes, value: bytes | None) -> None:
        """Write ``key`` (None deletes) through to the changelog of ``tp.partition``."""
        send_to_changelog(self.table, tp.partition, key, value)
        if value is None:
            self._entries.pop(key, None)
        else:
            self._entries[key] = value

    def note_position(self, tp: TP, offset: int) -> None:
        """Nothing: sources resume at the consumer group's committed offsets."""

    async def flush(self) -> None:
        """Nothing: the changelog records are Faust's producer's to send."""

    def stored_offsets(self, partition: int) -> dict[TP, int]:
        """None: sources resume at the consumer group's committed offsets."""
        return {}

    def entries_in_memory(self) -> int:
        """Every entry of the table."""
        return len(self._entries)
