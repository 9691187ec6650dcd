"""streams.replay.fence: the first failed produce request stops every later one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.produce import ProduceRequest

from streams.replay.fence import ProduceFence, ProduceFencedError


def _produce() -> Any:
    return ProduceRequest(required_acks=-1, timeout=1000, topics=[], transactional_id=None)


async def _fenced() -> None:
    calls: list[Any] = []
    outcomes: list[BaseException | str] = ["ok", KafkaConnectionError("reset")]

    async def send(node_id: int, request: Any, **kwargs: Any) -> Any:
        calls.append(request)
        outcome = outcomes.pop(0) if outcomes else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    producer = cast(AIOKafkaProducer, SimpleNamespace(client=SimpleNamespace(send=send)))
    fence = ProduceFence(producer)
    assert await producer.client.send(1, _produce()) == "ok"
    with pytest.raises(ProduceFencedError, match="KafkaConnectionError"):
        await producer.client.send(1, _produce())
    assert fence.tripped
    assert not ProduceFencedError.retriable  # aiokafka fails the batch, never resends it
    with pytest.raises(ProduceFencedError, match="not sent"):
        await producer.client.send(1, _produce())
    assert len(calls) == 2  # the third never reached the broker
    assert await producer.client.send(1, MetadataRequest([])) == "ok"  # others pass


def test_a_failed_produce_request_fences_the_producer() -> None:
    asyncio.run(_fenced())
