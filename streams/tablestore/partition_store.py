"""What the agents need of a table store: `PartitionStore`, one contract for every store.

A table is split into partitions: table partition p holds the entries written while
processing events of source partition p (Faust co-partitions a table with the topics its
agents read). A store is one worker's view of one table. Its writes stay in the worker
until `PartitionStore.flush` makes them *durable*: written, with the source offsets they
cover, to the copy that every store of the same table shares (Redis for ``RedisStore``,
a `streams.tablestore.memory.MemoryTable` for ``MemoryPartitionStore``). Each table
partition has one owner, the only store that writes it; every store may read any
partition (`PartitionStore.peek`).

Implementations:

- ``streams.tablestore.store.RedisStore`` (``redis://``), the store of production;
- ``streams.tablestore.memory.MemoryPartitionStore``, the same contract in this
  process's memory, for tests and tools that have neither Kafka nor Redis;
- ``streams.tablestore.fausttable.FaustTableStore``, a Faust table on one of Faust's own
  stores (``memory://``: one worker, for development) seen through this interface.

The first two are held to this contract by one suite
(``tests/tablestore_conformance.py``), run on the in-memory store in the unit tier and
on ``RedisStore`` against a real redis-server in the integration tier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from faust.types import TP


class PeekableStore(Protocol):
    """Reads of any partition of a table, this worker's or another's: what lookups need."""

    def peek(self, partition_keys: Mapping[int, Sequence[bytes]]) -> dict[int, list[bytes | None]]:
        """Entries of any partitions, owned by this worker or not, in one round trip.

        For lookups into a table that other workers write (the scorers read terminal
        states). An entry this store has written and not flushed is served as written
        (it is newer than the durable copy); the rest come from the durable copy as
        last flushed by their owner (or, in a store with a cache, as this store last
        read them). Nothing is kept for later reads: an entry of another worker's
        partition is read afresh by the next peek, and a `get_in` of an entry this
        store has neither read nor written still reads the durable copy.

        Returns:
            Exactly the partitions asked, each with the values in the order of its keys
            (None: absent).
        """
        ...


class PartitionStore(PeekableStore, Protocol):
    """One table's entries, by table partition, written with the source position of each write.

    Keys and values are raw bytes (the agents encode their states themselves); a key is
    any bytes, glob characters and NUL included, and the same key in two partitions is
    two entries. A value of None means absent; an empty value is a value.
    """

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        """The entry of ``key`` in table ``partition``; None when absent.

        This store's own writes come first: after ``put_at`` of ``key`` in
        ``partition``, the value written (None after a deletion), flushed or not.
        Otherwise the durable entry, as last flushed by whichever store wrote it. A
        store may keep serving an entry it has read (a cache) until the next rebalance;
        the partition's owner is its only writer, so the owner's reads are exact. A
        write in another partition never answers.
        """
        ...

    def prefetch(self, partition_keys: Mapping[int, Iterable[bytes]]) -> None:
        """Prepare the `get_in` reads of these keys, per partition, in one round trip.

        A hint, for agents that read a micro-batch's entries one by one afterwards: it
        changes no answer (a prefetched entry never hides this store's own write), and a
        store that holds everything in memory does nothing. Keys may repeat or be absent.
        """
        ...

    def put_at(self, tp: TP, offset: int, key: bytes, value: bytes | None) -> None:
        """Write ``key`` (None deletes it) in ``tp.partition`` for the event at ``offset``.

        The write is the change made by the event at ``offset`` of source partition
        ``tp``, in the table partition of the same number. `get_in` and `peek` of this
        store serve it at once; other stores see it once `flush` has returned.

        The write covers the event: the next flush records, with the entries, that
        ``tp`` resumes after the highest offset written since the previous flush (an
        earlier offset written after a later one, as a micro-batch may, never moves it
        back). The first write of ``tp`` in this store also records at once where
        ``tp`` resumes, unless the durable copy holds an offset for it already: no
        later than ``offset``, so that a crash before the flush reads the event again
        (see `stored_offsets`).
        """
        ...

    def note_position(self, tp: TP, offset: int) -> None:
        """Have ``tp`` resume no later than ``offset`` until a write covers it.

        For an agent that holds events back without writing them: their offsets are
        committed to the consumer group, and a partition that has written nothing would
        resume past them after a crash or a rebalance. Records ``offset`` as where
        ``tp`` resumes, as its first `put_at` would, if this store has not written
        ``tp`` yet and the durable copy holds no offset for it; otherwise does nothing.
        It never moves a recorded offset.
        """
        ...

    async def flush(self) -> None:
        """Make every write since the last flush durable, with the offsets it covers.

        Each partition's entries and offsets are written together, atomically: a
        reader never sees entries without the offsets that cover them. Once it returns,
        every store of the table reads the entries (`peek`; `get_in` of entries it
        has not read before) and `stored_offsets` holds the new offsets. This store's
        own reads do not change. A store whose writes stand for events whose outputs
        must be delivered first waits for them (``RedisStore`` waits for Faust's
        producer). With nothing written since the last flush, nothing changes. (A store
        that has lost a partition to another owner meanwhile drops its writes of it
        instead: ``RedisStore``'s fencing.)
        """
        ...

    def stored_offsets(self, partition: int) -> dict[TP, int]:
        """Where each source partition that wrote table ``partition`` resumes, as durable now.

        For a source flushed at least once, the offset after the highest one written
        before the last flush that covered it: its events up to there are in the
        durable entries, the next owner reads on from it. For a source only written or
        noted since, where its first `put_at` or `note_position` recorded it. Unflushed
        writes do not move it. A store whose sources resume at the consumer group's
        committed offsets instead (Faust's ``memory://``) returns no offsets.
        """
        ...

    def entries_in_memory(self) -> int:
        """How many entries this store holds in the worker's memory, for a gauge.

        At least the entries written and not yet flushed; a caching store counts its
        cache, a store kept wholly in memory every entry. Not the table's size.
        """
        ...
