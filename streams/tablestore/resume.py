"""Make Faust resume source partitions at the offsets Redis holds, not Kafka's.

In the no-changelog mode the offsets stored in Redis with the state are the truth. After
every rebalance Faust's recovery ends with ``consumer.perform_seek()``, which seeks each
assigned partition to the consumer group's committed offset. The store first commits
Redis's offsets to the group (so lag monitoring agrees), but that commit can fail when
another rebalance is already under way, so this wrapper re-seeks, after Faust's own seek,
every partition whose offset Redis knows: correctness never depends on that commit.

Every other assigned source partition gets an explicit position too: the group's
committed offset (Faust's own seek), or, when the group has none either, the earliest
offset Kafka still holds (the product's rule for its input topics). The consumer's
current position is never trusted. aiokafka's ``seek_to_committed`` leaves a partition
without a committed offset where it is, and that is not always where its reset policy
put it: Faust's fetch loop hands the consumer thread its set of active partitions by
reference; ``pause_partitions`` at the start of a rebalance empties that set while a
fetch is under way, aiokafka's ``Fetcher.fetched_records`` then takes an empty set for
"every partition" and returns the records of all of them, advancing their positions,
and Faust's ``Consumer.getmany`` drops the ones of partitions no longer active. A
partition taken over with a backlog and no offset anywhere thus sat at its end of log:
the takeover test (tests/integration/tablestore/test_store_takeover.py) lost 3,510 of
5,400 events that way, with no error.

The offsets come from the stores at the moment of the seek, not from the assignment:
Faust seeks again whenever its fetch loop receives records while the flow is stopped
(``Consumer.getmany``), at any point of a rebalance, concurrently with the recovery's own
seek, and a partition kept through a rebalance keeps the state the worker applied
meanwhile; each seek resumes where that state ends.

It also tells the stores where this worker starts reading every assigned partition. A
source partition that has never written a table has no offset in Redis yet; when it
first does, the store records that start position there before anything else, so a
crash before its first flush resumes from the start position, not from whatever the
group committed meanwhile.

The flow of messages to the streams is stopped while the partitions are sought, and left
stopped: both of Faust's callers resume it right after, clearing the streams' buffers
first. Faust resumes the flow and the partitions before it calls ``perform_seek`` (when
no changelog is replayed), so without the stop the fetch loop delivered messages from
the position the partition had before the seeks, the group's committed offset: a worker
taking over a partition whose group offset was ahead of Redis's applied those, and
Faust's fetch loop then dropped the events between the two offsets as already read (it
skips any message below its read offset), which the takeover test caught as events never
counted. Resuming the flow here would open another window: a message delivered before
the caller clears the buffers is dropped with them, after its offset was read.

This relies on three members Faust does not publish, reached through
``streams.faustcompat``: ``perform_seek`` (``faustcompat.seek`` wraps it on the consumer
instance; Faust calls it from its table recovery and from ``Consumer.getmany`` when the
flow is stopped), and the consumer's committed and read offset maps
(``faustcompat.offsets``): the committed one must match the position we seek to, or
Faust's commit logic sees a gap and stalls; the read one is the fetch loop's skip rule.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Mapping
from typing import Any, Protocol

from faust.types import TP

from streams.faustcompat import offsets, seek
from streams.faustcompat.seek import FaustSeek

logger = logging.getLogger(__name__)


class ResumeFollower(Protocol):
    """What a store tells, and is told, about where partitions resume."""

    def resume_offsets(self) -> Mapping[TP, int]:
        """Offsets Redis holds for assigned source partitions."""

    def note_start_positions(self, positions: Mapping[TP, int]) -> None:
        """Where this worker starts reading each assigned partition."""

    def unknown_partitions(self) -> set[int]:
        """Owned partitions of which Redis held nothing when they were claimed."""

    def refuse_sources(self, reasons: Mapping[TP, str]) -> None:
        """Refuse source partitions whose state cannot be rebuilt from the log."""


#: The stores following each consumer's seeks (a consumer's list lives as long as it).
_followers: weakref.WeakKeyDictionary[Any, list[ResumeFollower]] = weakref.WeakKeyDictionary()


def hold_flow(consumer: Any) -> None:
    """Deliver nothing to the streams from now until the rebalance's seek is done.

    Called when a rebalance's recovery ends, before Faust resumes the source partitions
    (``Recovery.on_recovery_completed`` resumes them, then seeks). Faust resumed the
    flow already, with the partitions paused; once they are resumed, a fetch that was in
    flight can hand its records to the streams before the seek's own stop of the flow
    runs, from the position Kafka gave the partition at the assignment: the group's
    committed offset, which lags the state. The fetch loop delivers up to a hundred
    records without yielding (``streams.faustcompat.fetchloop``), and the agents apply
    them while the seek awaits: events the state held already, applied again. With the
    flow stopped, the fetch loop delivers nothing (Faust's ``getmany`` asks for a seek
    instead), and Faust's caller resumes the flow after the seek, clearing the buffers.
    """
    consumer.stop_flow()


def install(consumer: Any, follower: ResumeFollower) -> None:
    """Have ``consumer`` seek to the followers' offsets after every seek of a rebalance."""
    followers = _followers.get(consumer)
    if followers is None:
        followers = _followers[consumer] = []
        seek.wrap_perform_seek(consumer, functools.partial(_seek_to_redis, consumer, followers))
    followers.append(follower)


async def _seek_to_redis(
    consumer: Any, followers: list[ResumeFollower], faust_seek: FaustSeek
) -> None:
    """Faust's seek, then the offsets Redis holds, then the earliest offsets of the rest."""
    # No message may reach the streams until every position is final (see the module
    # docstring): stop the flow before the first await. Faust's callers resume it right
    # after, clearing the streams' buffers first.
    consumer.stop_flow()
    await faust_seek()
    assignment = set(consumer.assignment())
    resumed: dict[TP, int] = {}
    for follower in followers:
        resumed.update(
            (tp, offset) for tp, offset in follower.resume_offsets().items() if tp in assignment
        )
    if resumed:
        # Faust's seek has just put these partitions, and the fetch loop's read offsets,
        # at the group's committed offsets, which may be behind the state (a commit
        # refused by a rebalance). The read offsets move first, before any await: should
        # anything below fail, Faust's other caller (``Consumer.getmany`` with the flow
        # stopped) only logs a warning, and the fetch loop then drops the events the
        # state holds instead of applying them again.
        offsets.set_read_offsets(consumer, resumed)
        offsets.set_committed_offsets(consumer, resumed)
        # seek_wait runs the seek in the consumer's own thread (a plain seek from
        # this thread races with its fetcher) and waits until the position holds.
        await consumer.seek_wait(resumed)
    positions = dict(resumed)
    uncommitted = []
    # Changelog partitions and Faust's leader topic (randomly assigned) are never a
    # table's source: asking their earliest offsets would only cost a broker round
    # trip on every restart (1.5 s measured).
    not_sources = consumer.app.tables.changelog_topics | set(
        getattr(consumer, "randomly_assigned_topics", ())
    )
    unknown: set[int] = set()
    for follower in followers:
        unknown |= follower.unknown_partitions()
    forgotten = []
    for tp in assignment - set(resumed):
        if tp.topic in not_sources:
            continue
        committed = offsets.committed_offset(consumer, tp)
        if committed is None:
            uncommitted.append(tp)
        elif committed > 0 and tp.partition in unknown:
            forgotten.append(tp)
        else:
            positions[tp] = committed
    if forgotten:
        uncommitted += await _forgotten_by_redis(consumer, forgotten, followers)
    if uncommitted:
        earliest = dict(await consumer.earliest_offsets(*uncommitted))
        # Seek there: nothing else sets their position (see the module docstring).
        await consumer.seek_wait(earliest)
        offsets.set_read_offsets(
            consumer, {tp: offset if offset else None for tp, offset in earliest.items()}
        )
        logger.info(
            "%d partitions with no offset in Redis or in the group start at the "
            "earliest offset Kafka holds",
            len(earliest),
        )
        positions.update(earliest)
    # Last, after every seek: the fetch loop may have set a read offset for a message
    # it abandoned when the flow stopped, after a seek did.
    offsets.set_read_offsets(consumer, resumed)
    for follower in followers:
        follower.note_start_positions(positions)


async def _forgotten_by_redis(
    consumer: Any, forgotten: list[TP], followers: list[ResumeFollower]
) -> list[TP]:
    """Sources the group has read but Redis holds nothing of: Redis lost their state.

    Such a source is read again from the start of the log when the log still holds its
    first event (offset 0), so the state is rebuilt exactly; when retention deleted
    events, it is refused (paused, marked in Redis, one ERROR line) rather than scored
    with state missing. Returns the sources to read from the start.
    """
    earliest = dict(await consumer.earliest_offsets(*forgotten))
    rebuild = [tp for tp in forgotten if earliest.get(tp) == 0]
    refused = {
        tp: f"{tp.topic}[{tp.partition}] refused: the consumer group has read it but Redis "
        f"holds no state of it, and the log no longer starts at 0 (earliest offset "
        f"{earliest.get(tp)}): not processed"
        for tp in forgotten
        if earliest.get(tp) != 0
    }
    if rebuild:
        logger.error(
            "Redis holds no state of %d partitions the consumer group has read (%s): it "
            "lost it; rebuilding them from the start of the log",
            len(rebuild),
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(rebuild)),
        )
    if refused and followers:
        followers[0].refuse_sources(refused)
    return rebuild
