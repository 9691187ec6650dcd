"""A transaction's trace reaches the dead letter a terminal agent makes of its forwarded row.

A real worker scores a transaction whose terminal has already seen transactions more than
its retention later: the scorer takes it (its customer is new), and the terminal agent
dead-letters its forwarded row ``too_late``. That dead letter carries a child of the
transaction's ``traceparent``, carried over on the forward message's row; a transaction
without one gets a dead letter without one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from pipeline_harness import Message, Workers, header, read_topic, register_model

from features.offline import compute_features
from features.online import EntityWindows
from features.simulator import SimulationConfig, simulate
from features.spec import DEFAULT_FEATURES, Entity
from streams.kafka import SENT_AT_HEADER, client_options, ensure_topics, product_topics
from streams.settings import Settings

pytestmark = pytest.mark.slow

T0 = 1_700_000_000_000
DAY = 86_400_000
PARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#: The terminal's transactions reach this far past the late ones: beyond its retention.
AHEAD = EntityWindows(DEFAULT_FEATURES, Entity.TERMINAL).retention_ms + DAY


def tx(tx_id: str, customer: str, t: int) -> bytes:
    return json.dumps(
        {
            "tx_id": tx_id,
            "tx_time": t,
            "customer_id": customer,
            "terminal_id": "T1",
            "amount": "25.00",
            "currency": "EUR",
            "schema_version": 1,
        }
    ).encode()


def test_a_terminals_dead_letter_of_a_forwarded_row_carries_the_transactions_trace(
    settings: Settings, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    small = simulate(SimulationConfig(customers=50, terminals=100, days=20, seed=3))
    register_model(tmp_path / "registry", compute_features(small), alert_share=0.05)
    settings = settings.model_copy(update={"model_registry_dir": tmp_path / "registry"})
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    names = settings.topic_names

    async def produce(*records: tuple[str, bytes, bytes, list[tuple[str, bytes]]]) -> None:
        producer = AIOKafkaProducer(enable_idempotence=True, **client_options(settings))
        await producer.start()
        try:
            for topic, key, value, headers in records:
                stamp = str(int(time.time() * 1000)).encode()
                await producer.send_and_wait(
                    topic, value, key=key, headers=[(SENT_AT_HEADER, stamp), *headers]
                )
        finally:
            await producer.stop()

    def scored(*tx_ids: str) -> Callable[[list[Message]], bool]:
        def done(messages: list[Message]) -> bool:
            seen = {json.loads(m.value or b"{}").get("tx_id") for m in messages}
            return set(tx_ids) <= seen

        return done

    workers = Workers(settings, tmp_path, free_port)
    _, port = workers.start()
    try:
        workers.wait_ready(port)
        # The terminal's newest transaction first, then (once it is forwarded: its score
        # record is sent after its forward) two transactions far behind it.
        source = names["transactions"]
        ahead = (source, b"C1", tx("ahead", "C1", T0 + AHEAD), [("traceparent", PARENT)])
        asyncio.run(produce(ahead))
        read_topic(settings, names["scores"], until=scored("ahead"), timeout_s=60)
        asyncio.run(
            produce(
                (source, b"C2", tx("traced", "C2", T0), [("traceparent", PARENT)]),
                (source, b"C3", tx("untraced", "C3", T0 + 1), []),
            )
        )
        scores = read_topic(
            settings, names["scores"], until=scored("traced", "untraced"), timeout_s=60
        )
        dead = read_topic(settings, names["dlq"], until=scored("traced", "untraced"), timeout_s=30)
    finally:
        codes = workers.stop_all()
    assert codes == [0], workers.log()

    letters: dict[str, Message] = {json.loads(m.value or b"")["tx_id"]: m for m in dead}
    assert sorted(letters) == ["traced", "untraced"]
    for letter in letters.values():
        assert header(letter, "fraudstream-problem") == b"too_late"
        assert (
            header(letter, "fraudstream-source-topic") == names["transactions_by_terminal"].encode()
        )
    child = header(letters["traced"], "traceparent")
    assert child is not None
    assert child[:36] == PARENT[:36]  # the transaction's trace id
    assert child[52:] == PARENT[52:]
    assert child[36:52] != PARENT[36:52]  # a child: the terminal agent's hop
    assert [name for name, _ in letters["traced"].headers].count("traceparent") == 1
    assert header(letters["untraced"], "traceparent") is None
    # The scorer's own outputs for it are children of the same trace, as before.
    [record] = [m for m in scores if json.loads(m.value or b"")["tx_id"] == "traced"]
    assert (header(record, "traceparent") or b"")[:36] == PARENT[:36]
