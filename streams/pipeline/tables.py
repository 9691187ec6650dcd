"""How the agents read and write their window tables, per event of a micro-batch.

Two costs dominate a table entry's round trip through an agent once Redis is batched
away (prefetch, flushes): Faust's table layers (``Table.__getitem__`` and its codecs,
and making the event current so the store knows the partition and offset), and decoding
and re-encoding the window state. `TableAccess` skips the first: it hands each read and
write to the table's `PartitionStore` with the event's position. `DecodedStates` skips
the second, for the entities an agent owns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from features.online import EntityState
from streams.pipeline.inputs import InputRecord
from streams.pipeline.outputs import decode_state
from streams.tablestore.partition_store import PartitionStore

#: Decoded states kept per table (bounded memory; about 2-3 KB each at most).
DEFAULT_DECODED_LIMIT: Final = 100_000


class TableAccess:
    """Get and put one table's raw entries on behalf of a given event.

    Reads go to the event's table partition (``get_in``), writes carry the event's
    source partition and offset (``put_at``): the store records that the state covers
    the event. Every store behaves alike (``streams.tablestore.partition_store``).

    Args:
        store: The table's store (``streams.tablestore.fausttable.partition_store_of``).
    """

    def __init__(self, store: PartitionStore) -> None:
        self.store = store

    def prefetch(self, partition_keys: Mapping[int, Iterable[bytes]]) -> None:
        """Load the entries a batch will read, in one round trip."""
        if partition_keys:
            self.store.prefetch(partition_keys)

    def get(self, event: InputRecord, key: bytes) -> bytes | None:
        """The entry of ``key`` in the partition of ``event``."""
        return self.store.get_in(event.message.partition, key)

    def note_position(self, event: InputRecord) -> None:
        """Make sure the store resumes ``event``'s partition no later than it (held, unwritten).

        A store that keeps its own resume offsets (``redis://``) records it; with
        ``memory://`` Faust's committed offsets are the resume point, and those move
        past held events (``memory://`` is for one worker in development).
        """
        message = event.message
        self.store.note_position(message.tp, message.offset)

    def put(self, event: InputRecord, key: bytes, value: bytes) -> None:
        """Write ``key`` as a state change made by ``event`` (its partition and offset)."""
        message = event.message
        self.store.put_at(message.tp, message.offset, key, value)


class DecodedStates:
    """Decoded window states kept beside the exact bytes object they match.

    An agent that owns an entity decodes its state, changes it and encodes it again,
    and the store keeps the encoded bytes object in its cache. Kept here with that same
    object, the decoded state is reused when the store hands the object back: identity
    (``is``) proves nobody wrote the entry since. Any other bytes (another writer, a
    reload from Redis after a rebalance) are decoded afresh.

    `take` removes the entry: the caller changes the state in place, and only `keep`,
    after the new bytes are written, puts it back. A batch that fails in between leaves
    no changed-but-unwritten state behind. `read_only` serves states read but never
    changed, by equality of bytes.

    Args:
        entity: "customer" or "terminal", for the log of an unreadable state.
        limit: Most states kept; beyond it the oldest kept are dropped.
    """

    def __init__(self, entity: str, limit: int = DEFAULT_DECODED_LIMIT) -> None:
        self.entity = entity
        self.limit = limit
        self._kept: dict[tuple[int, bytes], tuple[bytes, EntityState]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def take(self, partition: int, key: bytes, raw: bytes | None) -> EntityState:
        """The state stored as ``raw``: the kept one if ``raw`` is its bytes, else decoded."""
        kept = self._kept.pop((partition, key), None)
        if kept is not None and raw is not None and kept[0] is raw:
            return kept[1]
        return decode_state(self.entity, key, raw)

    def read_only(self, partition: int, key: bytes, raw: bytes | None) -> EntityState:
        """The state stored as ``raw``, for a caller that never changes it.

        For states another agent owns (the scorer's terminal reads): the kept state is
        reused while the stored bytes are equal to those it was decoded from, which
        holds between two flushes of its owner.
        """
        if raw is None:
            return EntityState()
        kept = self._kept.get((partition, key))
        if kept is not None and (kept[0] is raw or kept[0] == raw):
            return kept[1]
        state = decode_state(self.entity, key, raw)
        self.keep(partition, key, raw, state)
        return state

    def keep(self, partition: int, key: bytes, raw: bytes, state: EntityState) -> None:
        """Remember ``state`` as the decoding of ``raw``, just written for ``key``."""
        kept = self._kept
        if len(kept) >= self.limit:
            # dicts keep insertion order: drop the oldest tenth, amortised.
            for old in list(kept)[: max(1, self.limit // 10)]:
                del kept[old]
        kept[(partition, key)] = (raw, state)
