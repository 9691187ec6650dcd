"""Terminal state across partitions: where a terminal lives, batched reads, replay marks.

The terminal agents own the terminal table, partitioned by terminal id like the topics
they read (``transactions-by-terminal`` and ``fraud-reports``, both keyed by terminal id).
A scorer is partitioned by customer, so the terminals of its micro-batch live in any
partition, owned by any worker: it reads them with `TerminalLookup`, one round trip per
micro-batch, computing each terminal's partition the way the producers did.

Partitions: every producer of a terminal-keyed topic (Faust, aiokafka, the Java client)
uses the default partitioner, murmur2 of the key bytes, so `terminal_partition` repeats
it. A producer with a custom partitioner would break the lookup silently, so the
scorer's forwards set the partition explicitly with the same function.

Replay marks: the scorer forwards each valid transaction to the terminal agents
(``streams.pipeline.forwards``). After a crash it processes again the events after its
last flushed offset, so some transactions are forwarded twice. Rows from one source
partition reach a terminal partition in source-offset order (one producer at a time per
source partition, idempotent, ordered; rows in a message in offset order), so the
terminal agent keeps, per terminal partition and source partition, the highest source
offset it applied (`mark_key`), in the same table as the states it covers: both are
flushed in one atomic write, and a row at or below the mark is a duplicate, skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final

from aiokafka.partitioner import murmur2

from features.online import EntityState
from streams.pipeline.tables import DecodedStates
from streams.tablestore.partition_store import PeekableStore

#: Prefix of replay-mark keys; ``#`` cannot occur in an id (``streams.contracts.ID_PATTERN``).
_MARK_PREFIX: Final = b"#source:"
#: Key partitions remembered by `KeyPartitioner` (bounded memory).
_MEMO_SIZE: Final = 262_144


def terminal_partition(terminal_id: bytes, partitions: int) -> int:
    """The partition the default Kafka partitioner gives a key: murmur2, positive, modulo."""
    hashed: int = murmur2(terminal_id)
    return (hashed & 0x7FFFFFFF) % partitions


class KeyPartitioner:
    """The default partitioner's choice for keys (`terminal_partition`), with a bounded memo.

    murmur2 in Python costs microseconds a key; the scorer needs it for every terminal
    of a batch, and the worker for the key of every score record and alert it sends.
    """

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._memo: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        """The partition of one key."""
        partition = self._memo.get(key)
        if partition is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            partition = self._memo[key] = terminal_partition(key, self.partitions)
        return partition


@functools.cache
def mark_key(partition: int, source_partition: int) -> bytes:
    """The terminal-table key of a terminal partition's replay mark for a source partition.

    The key names the terminal partition too, so that marks stay apart in stores that
    key entries by key alone (memory://), not only in redis://, which keeps partitions
    apart by itself. Memoised (partitions squared keys at most): the terminal agent asks
    for a few per forward message, and at a live pace's small batches building them was
    2 % of its time.
    """
    return _MARK_PREFIX + f"{partition}:{source_partition}".encode()


class TerminalLookup:
    """Reads the states of a micro-batch's terminals, wherever their partitions are.

    Args:
        store: The terminal table's store (read with ``peek``).
        partitions: Partition count of the terminal-keyed topics.
        decoded: The decoded terminal states to read through; pass the terminal agents'
            (`streams.pipeline.terminal.TerminalStage.decoded`): a state they wrote is
            served by the store's cache as the very bytes object they keep it with, so
            the scorer reads it without decoding it again (in a backlog most terminals
            change between two of its batches). Default: states of its own.
    """

    def __init__(
        self, store: PeekableStore, partitions: int, decoded: DecodedStates | None = None
    ) -> None:
        self._store = store
        self.partition_of = KeyPartitioner(partitions)
        self._decoded = DecodedStates("terminal") if decoded is None else decoded

    def states(self, terminal_ids: Iterable[bytes]) -> dict[bytes, EntityState]:
        """The state of each terminal (an empty state for a terminal never seen).

        A stored state that does not decode is logged and read as empty, like a corrupt
        customer state: its terminal features are zero until the terminal agent writes
        it again, and the batch is scored. States are decoded once per version: the
        decoded state is kept while the stored bytes stay equal (`DecodedStates`); the
        returned states are shared and must not be changed, nor kept across an await
        (the terminal agent may take one and change it in place).
        """
        by_partition: dict[int, list[bytes]] = {}
        for terminal in dict.fromkeys(terminal_ids):
            by_partition.setdefault(self.partition_of(terminal), []).append(terminal)
        found = self._store.peek(by_partition)
        out: dict[bytes, EntityState] = {}
        read_only = self._decoded.read_only
        for partition, terminals in by_partition.items():
            for terminal, raw in zip(terminals, found[partition], strict=True):
                out[terminal] = read_only(partition, terminal, raw)
        return out
