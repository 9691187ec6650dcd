"""`MemoryPartitionStore`: the `PartitionStore` contract in this process's memory.

No Kafka, no Redis, no Faust app: for the unit tests of everything that reads or writes
a table, and for tools that run the agents' code on their own. Its durable copy is a
`MemoryTable` that several stores can share, as several workers share one Redis: a write
is seen by another store of the same `MemoryTable` only once flushed, and the offsets
recorded follow ``RedisStore``'s rules (``tests/tablestore_conformance.py`` holds both
to the same suite).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from faust.types import TP


@dataclass
class MemoryTable:
    """The durable copy of one table, shared by the `MemoryPartitionStore` s over it.

    Attributes:
        entries: Per table partition, the flushed entries.
        offsets: Per table partition, where each source partition that wrote it resumes.
    """

    entries: dict[int, dict[bytes, bytes]] = field(default_factory=dict)
    offsets: dict[int, dict[TP, int]] = field(default_factory=dict)


class MemoryPartitionStore:
    """A `PartitionStore` whose durable copy is a `MemoryTable` (a new one by default).

    Args:
        table: The durable copy; give several stores the same one to have them behave
            as the workers of one table.
    """

    def __init__(self, table: MemoryTable | None = None) -> None:
        self.table = MemoryTable() if table is None else table
        #: Written since the last flush, per table partition (None: deleted).
        self._written: dict[int, dict[bytes, bytes | None]] = {}
        #: Per source partition, the offset after the highest one written since the flush.
        self._covered: dict[TP, int] = {}
        #: Source partitions whose resume offset this store has recorded.
        self._sources: set[TP] = set()

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        """This store's write of ``key`` in ``partition``, else the flushed entry."""
        written = self._written.get(partition)
        if written is not None and key in written:
            return written[key]
        return self.table.entries.get(partition, {}).get(key)

    def prefetch(self, partition_keys: Mapping[int, Iterable[bytes]]) -> None:
        """Nothing to load: every entry is in memory."""

    def peek(self, partition_keys: Mapping[int, Sequence[bytes]]) -> dict[int, list[bytes | None]]:
        """Entries of any partitions: this store's writes, else the flushed entries."""
        return {p: [self.get_in(p, key) for key in keys] for p, keys in partition_keys.items()}

    def put_at(self, tp: TP, offset: int, key: bytes, value: bytes | None) -> None:
        """Write ``key`` in ``tp.partition`` for the event at ``offset`` of ``tp``."""
        if tp not in self._sources:
            self._record_start(tp, offset)
        if self._covered.get(tp, -1) < offset + 1:
            self._covered[tp] = offset + 1
        self._written.setdefault(tp.partition, {})[key] = value

    def note_position(self, tp: TP, offset: int) -> None:
        """Record where ``tp`` resumes unless it is recorded already."""
        if tp not in self._sources:
            self._record_start(tp, offset)

    async def flush(self) -> None:
        """Apply the writes since the last flush and their offsets to the `MemoryTable`."""
        written, self._written = self._written, {}
        covered, self._covered = self._covered, {}
        for partition, entries in written.items():
            stored = self.table.entries.setdefault(partition, {})
            for key, value in entries.items():
                if value is None:
                    stored.pop(key, None)
                else:
                    stored[key] = value
        for tp, offset in covered.items():
            self.table.offsets.setdefault(tp.partition, {})[tp] = offset

    def stored_offsets(self, partition: int) -> dict[TP, int]:
        """Where the sources of ``partition`` resume, as the `MemoryTable` holds it."""
        return dict(self.table.offsets.get(partition, {}))

    def entries_in_memory(self) -> int:
        """Every entry: the flushed ones and those written since, each once."""
        partitions = set(self.table.entries) | set(self._written)
        return sum(
            len(self.table.entries.get(p, {}).keys() | self._written.get(p, {}).keys())
            for p in partitions
        )

    def _record_start(self, tp: TP, offset: int) -> None:
        """Record ``offset`` as where ``tp`` resumes, unless an offset is recorded already."""
        self.table.offsets.setdefault(tp.partition, {}).setdefault(tp, offset)
        self._sources.add(tp)
