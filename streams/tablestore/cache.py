"""The write-back cache of a Redis-backed table: reads served locally, writes batched.

Faust calls store methods synchronously on the event loop, so a Redis round trip per
get/set would cap a worker near a thousand events a second. Entries are cached per table
partition; writes mark them dirty, and a flush takes a *snapshot* of the dirty entries (a
swap, O(1)) to write to Redis while processing goes on. If the write fails the snapshot is
merged back, unless an entry was written again meanwhile (the newer value wins).

Pure data structure: no Redis, no Faust; its bound is enforced by the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final


class _Missing:
    """Marker for "not cached": distinct from a cached absence (None)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

#: A cached value: bytes, or None when Redis is known to hold no entry for the key.
Cached = bytes | None


@dataclass
class PartitionCache:
    """The cached entries of one table partition and which of them are dirty."""

    entries: dict[bytes, Cached] = field(default_factory=dict)
    dirty: dict[bytes, Cached] = field(default_factory=dict)


class WriteBackCache:
    """Entries per partition, with dirty tracking and snapshot flushes."""

    def __init__(self) -> None:
        self._partitions: dict[int, PartitionCache] = {}

    def get(self, partition: int, key: bytes) -> Cached | _Missing:
        """The cached value (None = known absent) or MISSING when not cached."""
        cached = self._partitions.get(partition)
        if cached is None:
            return MISSING
        return cached.entries.get(key, MISSING)

    def load(self, partition: int, key: bytes, value: Cached) -> None:
        """Cache a value read from Redis (clean), unless a write got there first."""
        cached = self._partition(partition)
        if key not in cached.dirty:
            cached.entries[key] = value

    def put(self, partition: int, key: bytes, value: Cached) -> None:
        """Write a value (None deletes); it reaches Redis at the next flush."""
        cached = self._partition(partition)
        cached.entries[key] = value
        cached.dirty[key] = value

    def take_dirty(self) -> dict[int, dict[bytes, Cached]]:
        """Hand over every dirty entry, partition by partition, and start afresh."""
        snapshot: dict[int, dict[bytes, Cached]] = {}
        for partition, cached in self._partitions.items():
            if cached.dirty:
                snapshot[partition] = cached.dirty
                cached.dirty = {}
        return snapshot

    def restore_dirty(self, snapshot: dict[int, dict[bytes, Cached]]) -> None:
        """Put back a snapshot whose flush failed; newer writes are kept as they are."""
        for partition, entries in snapshot.items():
            cached = self._partition(partition)
            for key, value in entries.items():
                cached.dirty.setdefault(key, value)

    def has_dirty(self) -> bool:
        """Whether any write awaits a flush."""
        return any(cached.dirty for cached in self._partitions.values())

    def drop_partition(self, partition: int) -> None:
        """Forget a partition entirely (its dirty entries must have been flushed)."""
        self._partitions.pop(partition, None)

    def partitions(self) -> list[int]:
        """Partitions with cached entries."""
        return list(self._partitions)

    def items(self, partition: int) -> Iterator[tuple[bytes, Cached]]:
        """Cached entries of a partition."""
        cached = self._partitions.get(partition)
        if cached is not None:
            yield from list(cached.entries.items())

    def __len__(self) -> int:
        return sum(len(cached.entries) for cached in self._partitions.values())

    def evict_clean(self, max_entries: int) -> int:
        """Drop clean entries, oldest cached first, until at most ``max_entries`` remain.

        Returns:
            How many entries were dropped.
        """
        excess = len(self) - max_entries
        dropped = 0
        for cached in self._partitions.values():
            if dropped >= excess:
                break
            for key in list(cached.entries):
                if dropped >= excess:
                    break
                if key not in cached.dirty:
                    del cached.entries[key]
                    dropped += 1
        return dropped

    def _partition(self, partition: int) -> PartitionCache:
        cached = self._partitions.get(partition)
        if cached is None:
            cached = self._partitions[partition] = PartitionCache()
        return cached
