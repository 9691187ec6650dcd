"""Commit offsets we chose to the consumer group, through Faust's own commit path.

Upstream: faust-streaming 0.15.3, ``faust/transport/consumer.py``,
``ThreadDelegateConsumer._commit(offsets)``: it hands the offsets to the consumer
thread (``AIOKafkaConsumerThread.commit`` in ``faust/transport/drivers/aiokafka.py``),
which commits those of assigned partitions and returns False when the group has
already rebalanced. Faust's public ``Consumer.commit()`` commits only what the streams
acknowledged; there is no public call to commit chosen offsets, which the redis://
store needs when it resumes partitions at the offsets Redis holds (so lag monitoring
sees them). ``tests/unit/faustcompat/test_commit_contract.py`` fails when the method
or its signature changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.types import TP


async def commit_offsets(consumer: Any, offsets: Mapping[TP, int]) -> bool:
    """Commit ``offsets`` for the group of Faust's ``consumer``; False when refused.

    Refused means the group rebalanced meanwhile; other errors crash the consumer, as
    Faust's own commits do.
    """
    committed: bool = await consumer._commit(offsets)
    return committed
