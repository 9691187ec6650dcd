"""Bad input never stops a worker: each bad message lands in the DLQ with its reason.

A real worker scores a stream where good transactions surround every class of bad input
the issue names (malformed JSON, wrong types, missing fields, negative and absurd
amounts, unknown extra fields, oversized messages) and a few more (a wrong Kafka key, a
transaction too late for its customer, a malformed fraud report): every good one is
scored, every bad one is dead-lettered once with its original bytes and reason.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from pipeline_harness import Workers, header, read_topic, register_model

from features.offline import compute_features
from features.simulator import SimulationConfig, simulate
from streams.contracts import DecodeError, decode_score
from streams.kafka import SENT_AT_HEADER, client_options, ensure_topics, product_topics
from streams.settings import Settings

pytestmark = pytest.mark.slow

T0 = 1_700_000_000_000
DAY = 86_400_000


def tx(tx_id: str, customer: str, t: int, **changes: Any) -> dict[str, Any]:
    event = {
        "tx_id": tx_id,
        "tx_time": t,
        "customer_id": customer,
        "terminal_id": "T1",
        "amount": "25.00",
        "currency": "EUR",
        "schema_version": 1,
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


#: name -> (key, raw value, expected problem)
BAD: dict[str, tuple[bytes, bytes, str]] = {
    "malformed json": (b"C1", b'{"tx_id": "b1", "tx_time": ', "not_json"),
    "not an object": (b"C1", b"[1, 2, 3]", "not_an_object"),
    "wrong type": (b"C1", encode(tx("b2", "C1", T0 + 1, tx_time="yesterday")), "wrong_type"),
    "missing field": (b"C1", encode(tx("b3", "C1", T0 + 2, terminal_id=...)), "missing_field"),
    "negative amount": (b"C1", encode(tx("b4", "C1", T0 + 3, amount="-5.00")), "bad_value"),
    "absurd amount": (b"C1", encode(tx("b5", "C1", T0 + 4, amount="25000000.00")), "bad_value"),
    "unknown field": (b"C1", encode(tx("b6", "C1", T0 + 5, wallet="x")), "unknown_field"),
    "oversized": (b"C1", encode(tx("b7", "C1", T0 + 6, channel="pos" + " " * 70_000)), "too_large"),
    "wrong key": (b"C2", encode(tx("b8", "C1", T0 + 7)), "wrong_key"),
    "too late": (b"C1", encode(tx("b9", "C1", T0 + DAY - 2 * DAY)), "too_late"),
}
BAD_REPORT = (b"T1", b'{"tx_id": "x", "terminal_id": 7}', "missing_field")


def test_bad_messages_go_to_the_dlq_and_good_ones_are_scored(
    settings: Settings, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    small = simulate(SimulationConfig(customers=50, terminals=100, days=20, seed=3))
    version = register_model(tmp_path / "registry", compute_features(small), alert_share=0.05)
    settings = settings.model_copy(update={"model_registry_dir": tmp_path / "registry"})
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    names = settings.topic_names

    good = [tx(f"g{i}", "C1", T0 + DAY + i * 60_000) for i in range(5)]
    good += [tx(f"h{i}", f"C{3 + i}", T0 + DAY + i) for i in range(5)]
    sent: list[tuple[str, bytes, bytes]] = [(names["transactions"], b"C1", encode(good[0]))]
    for i, (key, value, _) in enumerate(BAD.values()):
        sent.append((names["transactions"], key, value))
        if i + 1 < len(good):
            event = good[i + 1]
            sent.append((names["transactions"], event["customer_id"].encode(), encode(event)))
    sent.append((names["fraud_reports"], BAD_REPORT[0], BAD_REPORT[1]))

    async def produce() -> None:
        producer = AIOKafkaProducer(
            enable_idempotence=True, max_request_size=2_000_000, **client_options(settings)
        )
        await producer.start()
        try:
            for topic, key, value in sent:
                stamp = str(int(time.time() * 1000)).encode()
                # One partition for C1's events, so "too late" follows the later good ones.
                await producer.send_and_wait(
                    topic, value, key=key, headers=[(SENT_AT_HEADER, stamp)], partition=0
                )
        finally:
            await producer.stop()

    workers = Workers(settings, tmp_path, free_port)
    _, port = workers.start()
    try:
        workers.wait_ready(port)
        asyncio.run(produce())
        scores = read_topic(
            settings, names["scores"], until=lambda m: len(m) >= len(good), timeout_s=60
        )
        dead = read_topic(
            settings, names["dlq"], until=lambda m: len(m) >= len(BAD) + 1, timeout_s=30
        )
        time.sleep(1)  # anything more would be a duplicate
        scores = read_topic(settings, names["scores"])
        dead = read_topic(settings, names["dlq"])
    finally:
        codes = workers.stop_all()
    assert codes == [0], workers.log()

    scored = []
    for message in scores:
        record = decode_score(message.value)
        assert not isinstance(record, DecodeError)
        assert record.model_version == version
        scored.append(record.tx_id)
    assert sorted(scored) == sorted(event["tx_id"] for event in good)

    expected = {value: problem for _, value, problem in BAD.values()}
    expected[BAD_REPORT[1]] = BAD_REPORT[2]
    got = {}
    for message in dead:
        assert message.value is not None
        problem = header(message, "fraudstream-problem")
        reason = header(message, "fraudstream-reason")
        assert problem is not None, message.headers
        assert reason, message.headers
        assert message.value not in got, "dead-lettered twice"
        got[message.value] = problem.decode()
        source = header(message, "fraudstream-source-topic")
        want_topic = "fraud_reports" if message.value == BAD_REPORT[1] else "transactions"
        assert source == names[want_topic].encode()
    assert got == expected
