"""Keep refused source partitions paused, whatever Faust resumes, and force a rebalance.

A source partition whose table state Redis lost beyond what the log can rebuild must not
be processed: every event would be scored against missing state. Pausing it is not
enough, since Faust resumes every assigned partition after each rebalance
(``consumer.resume_partitions`` at the end of its table recovery): the wrapper installed
here drops the refused ones from every such call. A refusal lasts for the life of the
consumer; the store refuses again at every assignment while Redis holds the mark.

``request_rebalance`` makes the consumer rejoin its group. Faust then runs its whole
revoke-and-assign cycle: flow stopped, stream buffers cleared, in-flight events awaited,
tables flushed, partitions claimed, every partition sought to the offsets Redis holds.
That cycle is how the store recovers partitions whose writes Redis lost, reusing the path
every takeover already proves, instead of seeking a running consumer behind its back.

This touches aiokafka's group coordinator (``_coordinator.request_rejoin``) through
Faust's consumer thread, neither of them public: faust-streaming is pinned to 0.15.3
and aiokafka to 0.14.0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from faust.types import TP

_REFUSED = "_fraudstream_refused"


def install(consumer: Any) -> None:
    """Have ``consumer.resume_partitions`` leave refused partitions paused (idempotent)."""
    if _REFUSED in consumer.__dict__:
        return
    refused: set[TP] = set()
    consumer.__dict__[_REFUSED] = refused
    faust_resume: Callable[[Iterable[TP]], None] = consumer.resume_partitions

    def resume_partitions(tps: Iterable[TP]) -> None:
        faust_resume({tp for tp in tps if tp not in refused})

    consumer.resume_partitions = resume_partitions


def refused(consumer: Any) -> set[TP]:
    """The partitions ``consumer`` keeps paused (empty before ``install``)."""
    found: set[TP] = consumer.__dict__.get(_REFUSED, set())
    return found


def refuse(consumer: Any, tps: Iterable[TP]) -> set[TP]:
    """Pause ``tps`` for good; return those not refused before."""
    install(consumer)
    held = refused(consumer)
    new = set(tps) - held
    held.update(new)
    consumer.pause_partitions(new)
    return new


def release(consumer: Any, tps: Iterable[TP]) -> set[TP]:
    """Stop refusing ``tps`` (the mark is gone from Redis); return those released.

    They stay paused until Faust resumes them, at the end of the rebalance under way.
    """
    held = refused(consumer)
    gone = held & set(tps)
    held.difference_update(gone)
    return gone


async def request_rebalance(consumer: Any) -> None:
    """Make Faust's consumer rejoin its group: a full revoke-and-assign cycle follows."""
    thread = consumer._thread

    async def rejoin(kafka_consumer: Any) -> None:
        kafka_consumer._coordinator.request_rejoin()

    await thread.call_thread(rejoin, thread._ensure_consumer())
