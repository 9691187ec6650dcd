"""aiokafka's producer sends through its client's send, which producerclient replaces."""

from __future__ import annotations

import aiokafka
import aiokafka.producer.sender
from upstream import upstream_source

from streams.faustcompat import producerclient


def test_aiokafkas_sender_sends_through_the_client_attribute() -> None:
    source = upstream_source(aiokafka.producer.sender, "SendProduceReqHandler")
    assert "self._client = sender.client" in source
    assert "await self._client.send(node_id, request)" in source
    assert "return error.retriable" in source


async def test_the_replaced_send_is_the_one_the_producers_client_uses() -> None:
    producer = aiokafka.AIOKafkaProducer()
    try:
        original = producer.client.send

        async def send(node_id: int, request: object, **kwargs: object) -> object:
            return await original(node_id, request, **kwargs)

        assert producerclient.replace_send(producer, send) == original
        assert producer.client.send is send
        assert producer._sender.client is producer.client  # the sender's client is this one
    finally:
        await producer.stop()
