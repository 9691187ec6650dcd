"""In-memory doubles of the pipeline stages' collaborators (our own interfaces, not clients).

- `Recorder`: the ``send`` callable of the stages, and one log shared with the tables, so
  a test sees the order of every output send and every table write of a batch.
- `TableDouble`: a table's `PartitionStore` that records what the stages do with it:
  reads, prefetches, and writes (in the shared log, each with the event at its position).
- `PeekStore`: the ``peek`` of a terminal table store, for `TerminalLookup`.
- `Event` and `Message`: an input record as the stages read one (``InputRecord``: key,
  value, Faust's message), weak-referenceable; each event
  is found by its position (`event_at`), which is all a store is told of it.
- `hostile_values`: a hypothesis strategy of message values a stage must survive.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from faust.types import TP
from hypothesis import strategies as st

from features.online import EntityState
from streams.metrics import PipelineMetrics
from streams.pipeline.inputs import InputRecord
from streams.pipeline.outputs import Headers
from streams.pipeline.terminals import terminal_partition


class Message:
    """The Kafka message of an event."""

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        headers: Headers | None = None,
        timestamp: float = 0.0,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.headers: Headers = [] if headers is None else headers
        self.timestamp = timestamp

    @property
    def tp(self) -> TP:
        """The topic partition."""
        return TP(self.topic, self.partition)


#: Every live event double by its position (topic, partition, offset).
_EVENTS: weakref.WeakValueDictionary[tuple[str, int, int], Event] = weakref.WeakValueDictionary()


class Event:
    """An event of a micro-batch (a plain class, weak-referenceable).

    The newest event made at a position is the one `event_at` finds there.
    """

    def __init__(self, key: bytes | None, value: bytes | None, message: Message) -> None:
        self.key = key
        self.value = value
        self.message = message
        _EVENTS[(message.topic, message.partition, message.offset)] = self

    def __repr__(self) -> str:
        m = self.message
        return f"Event({self.key!r}, {m.topic}:{m.partition}:{m.offset})"


def event_at(tp: TP, offset: int) -> Event | None:
    """The event at ``offset`` of ``tp``, None when no live event double is there."""
    return _EVENTS.get((tp.topic, tp.partition, offset))


def as_events(events: Sequence[Event]) -> Sequence[InputRecord]:
    """The doubles as what the stages take (they use key, value and message only)."""
    return cast("Sequence[InputRecord]", events)


@dataclass(frozen=True)
class Sent:
    """One ``send`` call."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: Headers | None

    def header(self, name: str) -> bytes | None:
        """The value of a header (the first of that name), None when absent."""
        for header, value in self.headers or ():
            if header == name:
                return value
        return None


@dataclass(frozen=True)
class Write:
    """One table write: where it went and the event it was made for (found by position)."""

    partition: int
    key: bytes
    value: bytes | None
    event: Any


class Recorder:
    """The shared log of a test: output sends and table writes, in the order they happened."""

    def __init__(self) -> None:
        self.log: list[Sent | Write] = []

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: Headers | None,
    ) -> None:
        """The stages' ``send``."""
        self.log.append(Sent(topic, key, value, partition, None if headers is None else headers))

    def sends(self, topic: str | None = None) -> list[Sent]:
        """The sends, all or to one topic, in order."""
        return [e for e in self.log if isinstance(e, Sent) and topic in (None, e.topic)]

    def writes(self) -> list[Write]:
        """The table writes, in order."""
        return [e for e in self.log if isinstance(e, Write)]

    def assert_sends_precede_writes(self) -> None:
        """Every send of the batch happened before any table write (at-least-once rule)."""
        kinds = [isinstance(e, Sent) for e in self.log]
        first_write = kinds.index(False) if False in kinds else len(kinds)
        assert all(not sent for sent in kinds[first_write:]), [type(e).__name__ for e in self.log]


class TableDouble:
    """A table's `PartitionStore` for the stage tests, over one dict; records its use.

    Entries live in `values` by (partition, key): a test puts what the table holds
    before a batch there, and reads what the batch wrote. `put_at` also appends a `Write`
    to the shared log, naming the event at the write's position; `get_in` records the
    read in `reads`, `prefetch` the request in `prefetched`, `note_position` the position
    in `noted`. Flushing is left to the store tests: it does nothing here.

    Args:
        recorder: The shared log, which receives every write.
    """

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.values: dict[tuple[int, bytes], bytes] = {}
        self.reads: list[tuple[int, bytes]] = []
        self.prefetched: list[dict[int, list[bytes]]] = []
        self.noted: list[tuple[TP, int]] = []

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        """The entry of ``key`` in ``partition``; the read is recorded."""
        self.reads.append((partition, key))
        return self.values.get((partition, key))

    def prefetch(self, partition_keys: Mapping[int, Iterable[bytes]]) -> None:
        """Record the request (everything is in memory already)."""
        self.prefetched.append({p: list(keys) for p, keys in partition_keys.items()})

    def peek(self, partition_keys: Mapping[int, Sequence[bytes]]) -> dict[int, list[bytes | None]]:
        """Entries of any partitions, in the order asked."""
        return {p: [self.values.get((p, k)) for k in keys] for p, keys in partition_keys.items()}

    def put_at(self, tp: TP, offset: int, key: bytes, value: bytes | None) -> None:
        """Write the entry, and log the write with the event at ``offset`` of ``tp``."""
        self.recorder.log.append(Write(tp.partition, key, value, event_at(tp, offset)))
        if value is None:
            self.values.pop((tp.partition, key), None)
        else:
            self.values[(tp.partition, key)] = value

    def note_position(self, tp: TP, offset: int) -> None:
        """Record the position."""
        self.noted.append((tp, offset))

    async def flush(self) -> None:
        """Nothing to flush."""

    def stored_offsets(self, partition: int) -> dict[TP, int]:
        """No offsets are kept."""
        return {}

    def entries_in_memory(self) -> int:
        """Every entry."""
        return len(self.values)


class PeekStore:
    """A terminal table store's ``peek``: entries of any partition, recorded requests.

    Args:
        partitions: Partition count of the terminal-keyed topics; `put` files each state
            under its terminal's partition, so a lookup asking another partition misses.
    """

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.entries: dict[int, dict[bytes, bytes]] = {}
        self.asked: list[dict[int, list[bytes]]] = []

    def put(self, terminal_id: bytes, state: EntityState | bytes) -> None:
        """Store a terminal's state in its partition."""
        raw = state if isinstance(state, bytes) else state.to_bytes()
        partition = terminal_partition(terminal_id, self.partitions)
        self.entries.setdefault(partition, {})[terminal_id] = raw

    def peek(self, partition_keys: Mapping[int, Sequence[bytes]]) -> dict[int, list[bytes | None]]:
        """Entries of any partitions, in the order asked."""
        self.asked.append({p: list(keys) for p, keys in partition_keys.items()})
        return {
            p: [self.entries.get(p, {}).get(k) for k in keys] for p, keys in partition_keys.items()
        }


def counter(metrics: PipelineMetrics, name: str, **labels: str) -> float:
    """The value of a metric sample (0 when it has never been set)."""
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def header_dict(headers: Headers | None) -> dict[str, bytes]:
    """Headers as a dict (each name once)."""
    out = dict(headers or ())
    assert len(out) == len(headers or ()), f"repeated header names: {headers}"
    return out


#: Any JSON value, nested a little.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def hostile_values(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> bytes | None:
    """Raw bytes, JSON of any shape, or a ``valid`` event with one field replaced or added
    (a lone surrogate among the names)."""
    kind = draw(st.sampled_from(["bytes", "json", "mutated", "valid"]))
    if kind == "bytes":
        return draw(st.none() | st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    data = draw(valid)
    if kind == "mutated":
        field = draw(st.sampled_from([*data, "x\ud800", "extra"]))
        data[field] = draw(JSON_VALUES | st.integers(0, 2**70))
    return json.dumps(data).encode()
