"""Telling that Redis lost acknowledged writes, and where to resume afterwards: pure rules.

Redis with ``appendfsync everysec`` acknowledges a write before it is on disk: a crash of
the machine takes the last second of writes with it, and a Redis restarted without its
files holds nothing at all. What remains is a consistent prefix of the flushes (each
flush is one script, written to the append-only file as one transaction), so resuming
from the offsets Redis holds and replaying the rest from Kafka is exact. What breaks it
is a worker that still holds the newer state in its cache and goes on writing on top.

Every partition's offsets hash counts its flushes (``flush_seq``). The worker remembers
the count it last wrote or found; a count in Redis below it means Redis went back in
time. The flush script refuses such a flush, and a claim that finds one says so.

Nothing here talks to Redis or Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from faust.types import TP

from streams.tablestore.keys import offset_field


def went_back(remembered: int | None, found: int) -> bool:
    """Whether a partition's flush count in Redis is behind the one this worker knows.

    Counts only grow in Redis, whoever writes: a smaller one can only come from Redis
    losing writes it acknowledged (restarted from an older file, or empty).

    Args:
        remembered: The count this worker last wrote or found; None: never seen.
        found: The count Redis holds now (0 when it has none).
    """
    return remembered is not None and found < remembered


def fenced_by_own_claim(member: str, owner: str, holder: bytes) -> bool:
    """Whether a refused flush was refused by an older claim of this same worker.

    Redis that lost this worker's latest claim still names the worker's previous token
    (same member id, older generation) as the owner: that is not another worker taking
    the partition over, but Redis going back in time.
    """
    held = holder.decode(errors="replace")
    return held != owner and held.startswith(f"{member}:")


def sources_of(partitions: Iterable[int], known: Iterable[TP]) -> set[TP]:
    """The source partitions feeding the given table partitions, among those known."""
    wanted = set(partitions)
    return {tp for tp in known if tp.partition in wanted}


@dataclass
class ResumePlan:
    """Where to resume the source partitions whose offsets Redis forgot."""

    #: Source partitions to replay from the start of the log (offset field to write).
    rebuild: dict[TP, int] = field(default_factory=dict)
    #: Source partitions that cannot be rebuilt, with the reason, one line.
    refused: dict[TP, str] = field(default_factory=dict)


def plan_resume(
    sources: Iterable[TP], stored: Mapping[bytes, bytes], earliest: Mapping[TP, int]
) -> ResumePlan:
    """Decide how each source partition resumes after Redis lost a partition's writes.

    A source whose offset Redis still holds needs nothing: Redis holds a consistent
    prefix of the flushes, and replaying from that offset is exact. One whose offset
    Redis lost (restarted empty, or lost the flush that first recorded it) rebuilds from
    the log: from its first offset when that is 0; when it is not, the log's retention
    deleted events the state needs, and the partition is refused rather than scored
    with state missing.

    Args:
        sources: Source partitions that fed the lost table partition.
        stored: The partition's offsets hash as Redis holds it now.
        earliest: The earliest offset Kafka still holds of each source without one.
    """
    plan = ResumePlan()
    for tp in sorted(sources):
        if offset_field(tp.topic, tp.partition) in stored:
            continue
        first = earliest.get(tp)
        if first == 0:
            plan.rebuild[tp] = 0
        else:
            plan.refused[tp] = (
                f"{tp.topic}[{tp.partition}] refused: Redis lost its state and the log no "
                f"longer holds all of its events (earliest offset {first}); not processed"
            )
    return plan
