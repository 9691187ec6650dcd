"""Make a Faust worker's consumer rejoin its group: a whole revoke-and-assign cycle.

Upstream: faust-streaming 0.15.3, ``faust/transport/drivers/aiokafka.py``:
``Consumer._thread`` (the ``AIOKafkaConsumerThread`` that owns the aiokafka consumer),
``AIOKafkaConsumerThread._ensure_consumer()`` (that consumer) and mode-streaming's
``ServiceThread.call_thread`` (run a coroutine in the consumer's thread, public);
aiokafka 0.14.0, ``aiokafka/consumer/consumer.py``, ``AIOKafkaConsumer._coordinator``
(its ``GroupCoordinator``) and ``aiokafka/consumer/group_coordinator.py``,
``GroupCoordinator.request_rejoin()``, which makes the coordinator's loop rejoin the
group at its next turn. Neither library offers a public way to ask for a rebalance;
the call runs in the consumer's own thread, as every call on the aiokafka consumer
must. ``tests/unit/faustcompat/test_rejoin_contract.py`` fails when one changes.
"""

from __future__ import annotations

from typing import Any


async def request_rejoin(consumer: Any) -> None:
    """Make Faust's ``consumer`` rejoin its group (returns once the request is made)."""
    thread = consumer._thread

    async def rejoin(kafka_consumer: Any) -> None:
        kafka_consumer._coordinator.request_rejoin()

    await thread.call_thread(rejoin, thread._ensure_consumer())
