"""Run our code in place of the Faust consumer's seek that follows every rebalance.

Upstream: faust-streaming 0.15.3, ``faust/transport/consumer.py``,
``Consumer.perform_seek``: it seeks every assigned partition to the group's committed
offset (``seek_to_committed``) and records those offsets in ``_committed_offset`` and
``_read_offset`` (see ``offsets``). Faust calls it, looked up on the instance at call
time, from ``faust/tables/recovery.py`` (``Recovery._resume_streams`` and
``Recovery.on_recovery_completed``) when a rebalance's recovery is done, and from
``Consumer.getmany`` when it is asked for records while the flow is stopped. It is not
part of Faust's ``ConsumerT`` interface, so nothing says it stays the one seek of a
rebalance. `wrap_perform_seek` replaces it on one consumer instance with a coroutine
that receives Faust's own seek to await; ``streams.tablestore.resume`` uses it to seek
to the offsets Redis holds. ``tests/unit/faustcompat/test_seek_contract.py`` fails when
``perform_seek`` or its callers change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

#: Faust's own seek of one consumer, bound: await it to seek to the committed offsets.
FaustSeek = Callable[[], Awaitable[None]]


def wrap_perform_seek(consumer: Any, seek: Callable[[FaustSeek], Awaitable[None]]) -> None:
    """Make ``consumer``'s seek after a rebalance run ``seek(faust_seek)`` instead.

    Not idempotent: a second call wraps the wrapper (the caller keeps track).
    """
    faust_seek: FaustSeek = consumer.perform_seek

    async def perform_seek() -> None:
        await seek(faust_seek)

    consumer.perform_seek = perform_seek
