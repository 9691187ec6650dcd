"""Where a replay continues: per partition, right after the last event the topic holds.

Pure: what the topics hold in, which events still to send out; no Kafka, no clock.

A replay sends its events in one deterministic order (``streams.replay.events``: the
same file and options give the same order), and marks every record with the event's
index in that order, the ``REPLAY_SEQ_HEADER``. Each partition receives its events in
that order (one idempotent producer, one batch in flight per partition), so a partition
whose last record is event ``n`` holds every one of its events up to ``n`` and none
after. Continuing is then exact: send event ``i`` to its partition ``p`` only if
``i > last[p]``. That serves both a replay that lost its broker (it reads the tails and
re-sends what is missing, ``streams.replay.sender``) and ``fraudstream replay --resume``
after a replay that died.

A tail's value is compared with the event of the same index when the replay reaches it,
so resuming with another file or other options (another order) fails loudly instead of
skipping the wrong events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from streams.replay.events import TRANSACTION

#: Kafka header with the event's index in the replay's send order, ASCII decimal.
REPLAY_SEQ_HEADER: Final = "fraudstream-replay-seq"

#: A partition of one of the two event topics: (``events.TRANSACTION`` or
#: ``events.REPORT``, partition number).
Target = tuple[int, int]


class ResumeError(ValueError):
    """The topics hold something this replay cannot continue; the message is one line."""


def read_mark(headers: Iterable[tuple[str, bytes]]) -> int | None:
    """The ``REPLAY_SEQ_HEADER`` of a record, None when absent or malformed."""
    for name, value in headers:
        if name == REPLAY_SEQ_HEADER:
            return int(value) if value.isdigit() else None
    return None


@dataclass(frozen=True, slots=True)
class Tail:
    """The end of one partition.

    Attributes:
        end_offset: The partition's end offset (0: empty).
        seq: The replay mark of its last record; None if empty or unmarked.
        value: The last record's value, to check it against the event of that index.
    """

    end_offset: int
    seq: int | None = None
    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """Per partition, the last event of this replay that the partition holds.

    Attributes:
        last: Event index per partition; partitions holding none are absent.
        values: The value of each of those events, as the partition holds it.
    """

    last: Mapping[Target, int]
    values: Mapping[Target, bytes]

    @property
    def highest(self) -> int:
        """The highest index held by any partition (-1: none)."""
        return max(self.last.values(), default=-1)


NOTHING: Final = Written({}, {})


def written(
    tails: Mapping[Target, Tail],
    *,
    since: Mapping[Target, Tail] | None = None,
    before: Written = NOTHING,
    topics: Mapping[int, str],
) -> Written:
    """What this replay's events the partitions hold, from their tails.

    Args:
        tails: The tails now.
        since: The tails when this replay started; a partition whose end has not moved
            since holds nothing of this replay beyond ``before``. None: count every
            tail (``--resume``: the replay continued is the one that wrote them).
        before: What the partitions held of this replay at its start (``--resume``).
        topics: Topic names by kind, for messages.

    Raises:
        ResumeError: A partition this replay wrote to ends with a record without a mark.
    """
    last = dict(before.last)
    values = dict(before.values)
    for target, tail in tails.items():
        start = since.get(target) if since is not None else None
        if tail.end_offset == 0 or (start is not None and tail.end_offset <= start.end_offset):
            continue
        if tail.seq is None or tail.value is None:
            kind, partition = target
            raise ResumeError(
                f"partition {partition} of {topics[kind]} ends with a record that has no "
                f"{REPLAY_SEQ_HEADER} header: it was not written by fraudstream replay"
            )
        last[target], values[target] = tail.seq, tail.value
    return Written(last, values)


def to_send(
    base: int,
    targets: Sequence[Target],
    values: Sequence[bytes],
    held: Written,
    topics: Mapping[int, str],
) -> list[int] | None:
    """The positions in a frame of the events its partitions do not hold yet.

    Args:
        base: Index of the frame's first event.
        targets: Each event's partition.
        values: Each event's value, to check the events the tails name.
        held: What the partitions hold.
        topics: Topic names by kind, for messages.

    Returns:
        None when every event is still to send (the common case, found without a loop
        over the events), else the positions to send, in order.

    Raises:
        ResumeError: A partition's last record is not the event of its index: the
            topics hold another replay (another file, other options).
    """
    if held.highest < base:
        return None
    last, keep = held.last, []
    for position, target in enumerate(targets):
        seq = base + position
        mark = last.get(target, -1)
        if seq > mark:
            keep.append(position)
        elif seq == mark and values[position] != held.values[target]:
            kind, partition = target
            what = "transaction" if kind == TRANSACTION else "fraud report"
            raise ResumeError(
                f"partition {partition} of {topics[kind]} ends with another {what} than "
                f"event {seq} of this replay: the topics hold a replay of another file or "
                "with other options, which --resume cannot continue"
            )
    return keep
