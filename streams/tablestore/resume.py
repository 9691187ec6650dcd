"""Make Faust resume source partitions at the offsets Redis holds, not Kafka's.

In the no-changelog mode the offsets stored in Redis with the state are the truth. After
every rebalance Faust's recovery ends with ``consumer.perform_seek()``, which seeks each
assigned partition to the consumer group's committed offset; the store first commits
Redis's offsets to the group (so lag monitoring agrees), but that commit can fail when
another rebalance is already under way. So this wrapper re-seeks, after Faust's own seek,
every partition for which a store knows the Redis offset: correctness never depends on
that commit having succeeded.

This touches two members Faust does not publish: ``perform_seek`` (wrapped on the
consumer instance) and ``_committed_offset`` (Faust's record of the committed position,
which must match the position we seek to, or its commit logic sees a gap and stalls).
faust-streaming is pinned to 0.15.3 for this reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faust.types import TP

logger = logging.getLogger(__name__)

ResumeOffsets = Callable[[], Mapping[TP, int]]

_PROVIDERS = "_fraudstream_resume_providers"


def install(consumer: Any, provider: ResumeOffsets) -> None:
    """Have ``consumer`` seek to ``provider()``'s offsets after every ``perform_seek``."""
    providers: list[ResumeOffsets] | None = consumer.__dict__.get(_PROVIDERS)
    if providers is None:
        providers = consumer.__dict__[_PROVIDERS] = []
        consumer.perform_seek = _seeking_to_redis(consumer, consumer.perform_seek, providers)
    providers.append(provider)


def _seeking_to_redis(
    consumer: Any, faust_seek: Callable[[], Awaitable[None]], providers: list[ResumeOffsets]
) -> Callable[[], Awaitable[None]]:
    async def perform_seek() -> None:
        await faust_seek()
        assignment = consumer.assignment()
        for provider in providers:
            for tp, offset in provider().items():
                if tp not in assignment:
                    continue
                await consumer.seek(tp, offset)
                consumer._committed_offset[tp] = offset
                logger.debug("resuming %s at offset %d from Redis", tp, offset)

    return perform_seek
