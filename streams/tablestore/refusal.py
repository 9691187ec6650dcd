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

The Faust and aiokafka members this needs are reached through ``streams.faustcompat``:
``pauses`` (the wrapper of ``resume_partitions``) and ``rejoin`` (the group rejoin).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from faust.types import TP

from streams.faustcompat import pauses, rejoin

#: The partitions each consumer keeps paused (a consumer's set lives as long as it).
_refused: weakref.WeakKeyDictionary[Any, set[TP]] = weakref.WeakKeyDictionary()


def install(consumer: Any) -> None:
    """Have ``consumer.resume_partitions`` leave refused partitions paused (idempotent)."""
    if consumer in _refused:
        return
    held = _refused[consumer] = set()
    pauses.keep_paused(consumer, held)


def refused(consumer: Any) -> set[TP]:
    """The partitions ``consumer`` keeps paused (empty before ``install``)."""
    return _refused.get(consumer, set())


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
    await rejoin.request_rejoin(consumer)
