"""Intercept every request an aiokafka producer sends to a broker.

Upstream: aiokafka 0.14.0, ``aiokafka/producer/producer.py``, ``AIOKafkaProducer.client``
(its ``AIOKafkaClient``), and ``aiokafka/producer/sender.py``,
``SendProduceReqHandler``, which sends each produce request with
``self._client.send(node_id, request)`` on that same client and retries a batch when
the error it gets is ``retriable``. aiokafka offers no hook on produce requests;
`replace_send` replaces the client's ``send`` on one producer instance, so that
``streams.replay.fence`` can fail a produce request (with an error that is not
retriable) instead of letting aiokafka resend one that may have been written.
``tests/unit/faustcompat/test_producerclient_contract.py`` fails when the producer
stops sending through the client attribute, or stops honouring ``retriable``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

#: ``AIOKafkaClient.send(node_id, request, **kwargs)``.
Send = Callable[..., Awaitable[Any]]


def replace_send(producer: Any, send: Send) -> Send:
    """Make ``producer`` send every request with ``send``; return the client's own send."""
    client = producer.client
    original: Send = client.send
    client.send = send
    return original
