"""Models reach live workers: none yet (transactions wait), then promoted, then swapped.

A worker started before any promotion takes no transaction, stops cleanly on SIGTERM and
leaves them in Kafka; the next worker scores them once a model is promoted. A promotion
published while a worker runs is swapped in without a restart: later transactions are
scored by the new version.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from pipeline_harness import Workers, read_topic, register_model

from features.offline import compute_features
from features.simulator import SimulationConfig, simulate
from models.registry import ModelRegistry
from streams.contracts import DecodeError, decode_score
from streams.kafka import client_options, ensure_topics, product_topics
from streams.modelcontrol import publish_promotion
from streams.settings import Settings

pytestmark = pytest.mark.slow

T0 = 1_700_000_000_000


def transactions(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    return [
        (
            f"C{i % 7}".encode(),
            json.dumps(
                {
                    "tx_id": f"{prefix}{i}",
                    "tx_time": T0 + i * 1000,
                    "customer_id": f"C{i % 7}",
                    "terminal_id": f"T{i % 5}",
                    "amount": "12.50",
                    "currency": "EUR",
                    "schema_version": 1,
                }
            ).encode(),
        )
        for i in range(count)
    ]


def produce(settings: Settings, messages: list[tuple[bytes, bytes]]) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(enable_idempotence=True, **client_options(settings))
        await producer.start()
        try:
            for key, value in messages:
                await producer.send_and_wait(settings.topic_names["transactions"], value, key=key)
        finally:
            await producer.stop()

    asyncio.run(run())


def readiness(port: int) -> tuple[int, str | None]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
            return response.status, json.loads(response.read()).get("reason")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()).get("reason")


def versions_by_tx(settings: Settings, count: int) -> dict[str, str]:
    scores = read_topic(
        settings, settings.topic_names["scores"], until=lambda m: len(m) >= count, timeout_s=60
    )
    out = {}
    for message in scores:
        record = decode_score(message.value)
        assert not isinstance(record, DecodeError)
        out[record.tx_id] = record.model_version
    return out


def test_a_worker_without_a_model_waits_stops_cleanly_and_loses_nothing(
    settings: Settings, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    registry = tmp_path / "registry"
    settings = settings.model_copy(update={"model_registry_dir": registry})
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    workers = Workers(settings, tmp_path, free_port)
    _, port = workers.start()
    workers.wait_ready(port)
    produce(settings, transactions("a", 20))
    time.sleep(3)
    assert workers.metric(port, "fraudstream_transactions_total") == 0
    assert readiness(port) == (503, "no model promoted yet")
    started = time.monotonic()
    assert workers.stop_all() == [0], workers.log()
    assert time.monotonic() - started < 30

    small = simulate(SimulationConfig(customers=50, terminals=100, days=20, seed=3))
    version = register_model(registry, compute_features(small), alert_share=0.05)
    _, port = workers.start()
    try:
        workers.wait_ready(port)
        scored = versions_by_tx(settings, 20)
        assert readiness(port) == (200, None)
    finally:
        assert workers.stop_all() == [0], workers.log()
    assert scored == {f"a{i}": version for i in range(20)}


def test_a_promotion_swaps_the_model_of_a_running_worker(
    settings: Settings, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    registry_dir = tmp_path / "registry"
    settings = settings.model_copy(update={"model_registry_dir": registry_dir})
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    small = compute_features(simulate(SimulationConfig(customers=50, terminals=100, days=20)))
    first = register_model(registry_dir, small, alert_share=0.05)
    workers = Workers(settings, tmp_path, free_port)
    _, port = workers.start()
    try:
        workers.wait_ready(port)
        produce(settings, transactions("a", 10))
        assert set(versions_by_tx(settings, 10).values()) == {first}

        second = register_model(registry_dir, small, alert_share=0.2)
        promotion = ModelRegistry(registry_dir).promote(second)
        asyncio.run(publish_promotion(settings, promotion))
        deadline = time.monotonic() + 30
        while workers.metric(port, "fraudstream_model_swaps_total") < 1:  # the first is no swap
            assert time.monotonic() < deadline, workers.log()
            time.sleep(0.2)
        produce(settings, transactions("b", 10))
        scored = versions_by_tx(settings, 20)
    finally:
        assert workers.stop_all() == [0], workers.log()
    assert {v for t, v in scored.items() if t.startswith("a")} == {first}
    assert {v for t, v in scored.items() if t.startswith("b")} == {second}
