"""Producers that are not ours cannot stop, blind or corrupt a worker.

A real worker reads transactions and fraud reports written by kcat (librdkafka: its own
partitioner, CRC32, and a header name that is not UTF-8) and by a plain aiokafka producer
that places records by CRC32 too and sends odd headers (a null or 5,000-digit
``fraudstream-sent-ms``, a send time of 0, ``traceparent``). Between good transactions
come a lone-surrogate field name, an event dated 2099, a transaction delivered twice, an
id reused with another amount and a 100 kB fraud report. The worker keeps running and
exits 0 on SIGTERM; every good transaction is scored once with the customer features of
an undisturbed run; every bad record is dead-lettered once with its reason and headers;
misplaced reports reach their terminal's state.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaProducer
from pipeline_harness import Workers, header, read_topic, register_model

from features.offline import compute_features
from features.online import EntityState, OnlineEngine
from features.simulator import SimulationConfig, simulate
from features.spec import DEFAULT_FEATURES
from streams.contracts import DecodeError, decode_alert, decode_score
from streams.kafka import SENT_AT_HEADER, client_options, ensure_topics, product_topics
from streams.pipeline.outputs import HEADERS_DROPPED_HEADER, MAX_DLQ_VALUE_BYTES, TRUNCATED_HEADER
from streams.settings import Settings
from streams.tablestore.keys import entry_key, partition_prefix

pytestmark = pytest.mark.slow

DAY = 86_400_000
HOUR = 3_600_000


def tx(tx_id: str, customer: str, t: int, terminal: str = "T1", amount: str = "25.00") -> bytes:
    return json.dumps(
        {
            "tx_id": tx_id,
            "tx_time": t,
            "customer_id": customer,
            "terminal_id": terminal,
            "amount": amount,
            "currency": "EUR",
            "schema_version": 1,
        }
    ).encode()


def report(tx_id: str, terminal: str, t: int, reported_at: int) -> bytes:
    return json.dumps(
        {
            "tx_id": tx_id,
            "customer_id": "K1",
            "terminal_id": terminal,
            "tx_time": t,
            "reported_at": reported_at,
            "schema_version": 1,
        }
    ).encode()


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default partitioner for keyed records (``consistent_random``)."""
    return zlib.crc32(key) % partitions


def test_a_worker_survives_hostile_producers_and_scores_every_good_record(
    settings: Settings, tmp_path: Path, free_port: Callable[[], int], redis_client: redis.Redis
) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat (Debian package kcat) is needed: `make test` installs it"
    small = simulate(SimulationConfig(customers=50, terminals=100, days=20, seed=3))
    version = register_model(tmp_path / "registry", compute_features(small), alert_share=0.05)
    settings = settings.model_copy(update={"model_registry_dir": tmp_path / "registry"})
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    names = settings.topic_names
    partitions = settings.topic_partitions
    now = int(time.time() * 1000)
    t0 = now - 2 * DAY

    # Good transactions: customer -> (tx_id, time, amount) in the order each card sends them.
    good: dict[str, list[tuple[str, int, str]]] = {
        "K1": [(f"k1-{i}", t0 + i * HOUR, "20.00") for i in range(4)],
        "K2": [(f"k2-{i}", t0 + i * HOUR, "30.00") for i in range(4)],
        "K3": [(f"k3-{i}", t0 + i * HOUR, "40.00") for i in range(3)],
    }
    stamp = str(now).encode()
    records: list[tuple[str, bytes, bytes, list[tuple[str, bytes | None]]]] = []
    # K1 (aiokafka, CRC32 placement): odd sent-ms headers, a duplicate, a reused id.
    for i, (tx_id, t, amount) in enumerate(good["K1"]):
        odd: list[tuple[str, bytes | None]] = [  # type: ignore[assignment]
            [(SENT_AT_HEADER, None)],
            [(SENT_AT_HEADER, b"9" * 5000)],
            [(SENT_AT_HEADER, b"0"), ("traceparent", b"00-4bf9-00f0-01")],
            [(SENT_AT_HEADER, stamp)],
        ][i]
        records.append((names["transactions"], b"K1", tx(f"k1-{i}", "K1", t, amount=amount), odd))
        if i == 1:
            records.append((names["transactions"], b"K1", tx(tx_id, "K1", t, amount=amount), []))
            conflicting = tx(tx_id, "K1", t, amount="99.00")
            records.append((names["transactions"], b"K1", conflicting, []))
            # A whole transaction with one more field, named by a lone surrogate.
            surrogate = tx("s1", "K1", t + 1)[:-1] + b', "x\\ud800": 1}'
            records.append((names["transactions"], b"K1", surrogate, [("traceparent", b"t-s")]))
            future = tx("f1", "K1", 4_102_444_799_000)
            records.append((names["transactions"], b"K1", future, []))
    # K3 (aiokafka) and reports, placed by CRC32.
    for tx_id, t, amount in good["K3"]:
        records.append((names["transactions"], b"K3", tx(tx_id, "K3", t, amount=amount), []))
    # Nearly all the broker takes in one record: 900 kB of value and a 140 kB header. Its
    # dead letter must still fit the worker's producer (1,000,000 bytes a request).
    huge = b"{" + b"x" * 899_999
    records.append((names["transactions"], b"K3", huge, [("bulk", b"h" * 140_000)]))
    misplaced_reports = [report(f"r{i}", f"TR{i}", t0 - DAY, t0 - DAY + HOUR) for i in range(8)]
    records += [
        (names["fraud_reports"], f"TR{i}".encode(), r, []) for i, r in enumerate(misplaced_reports)
    ]
    big = json.loads(report("big", "TR0", t0, t0))
    big["schema_version"] = 2
    big["notes"] = "x" * 100_000
    too_large = json.dumps(big).encode()
    records.append((names["fraud_reports"], b"TR0", too_large, []))

    async def produce() -> None:
        producer = AIOKafkaProducer(max_request_size=2_000_000, **client_options(settings))
        await producer.start()
        try:
            for topic, key, value, headers in records:
                await producer.send_and_wait(
                    topic,
                    value,
                    key=key,
                    headers=headers,
                    partition=crc32_partition(key, partitions),
                )
        finally:
            await producer.stop()

    def kcat_send(key: bytes, value: bytes) -> None:
        # K2 through librdkafka, each with a header whose name is not UTF-8.
        subprocess.run(
            [
                kcat,
                "-P",
                "-b",
                settings.kafka_bootstrap_servers,
                "-t",
                names["transactions"],
                "-k",
                key,
                "-H",
                b"\xfe\xff=1",
                "-H",
                b"fraudstream-sent-ms=" + stamp,
            ],
            input=value,
            check=True,
            timeout=30,
        )

    workers = Workers(settings, tmp_path, free_port)
    _, port = workers.start()
    try:
        workers.wait_ready(port)
        asyncio.run(produce())
        for tx_id, t, amount in good["K2"]:
            kcat_send(b"K2", tx(tx_id, "K2", t, amount=amount))
        expected_scores = sum(len(v) for v in good.values())
        scores = read_topic(
            settings, names["scores"], until=lambda m: len(m) >= expected_scores, timeout_s=90
        )
        dead = read_topic(settings, names["dlq"], until=lambda m: len(m) >= 5, timeout_s=30)
        time.sleep(2)  # anything more would be a duplicate
        scores = read_topic(settings, names["scores"])
        dead = read_topic(settings, names["dlq"])
        alerts = read_topic(settings, names["alerts"])
        alive = workers.running[0][0].poll() is None
    finally:
        codes = workers.stop_all()
    assert alive, workers.log()
    assert codes == [0], workers.log()

    # Every good transaction scored once, with the features of an undisturbed run.
    engine = OnlineEngine()
    expected_features: dict[str, list[float]] = {}
    for customer, events in good.items():
        for tx_id, t, amount in events:
            expected_features[tx_id] = engine.transaction(t, customer, "T1", float(amount), tx_id)
    scored: dict[str, Any] = {}
    for message in scores:
        record = decode_score(message.value)
        assert not isinstance(record, DecodeError)
        assert record.model_version == version
        assert record.tx_id not in scored, f"{record.tx_id} scored twice"
        scored[record.tx_id] = record
    assert sorted(scored) == sorted(expected_features)
    for tx_id, vector in expected_features.items():
        for name, value in zip(DEFAULT_FEATURES.names, vector, strict=True):
            if name.startswith("CUSTOMER_ID"):
                assert scored[tx_id].features[name] == pytest.approx(value), (tx_id, name)
    for message in alerts:
        alert = decode_alert(message.value)
        assert not isinstance(alert, DecodeError)
        assert alert.latency_ms < 120_000, alert  # never the 57 years a sent-ms of 0 gave

    # Every bad record dead-lettered once, with its reason and its own headers.
    problems = {m.value: header(m, "fraudstream-problem") for m in dead}
    assert len(problems) == len(dead), "a record was dead-lettered twice"
    assert problems == {
        conflicting: b"conflicting_duplicate",
        surrogate: b"unknown_field",
        future: b"future_event",
        too_large: b"too_large",
        huge[:MAX_DLQ_VALUE_BYTES]: b"too_large",
    }
    (surrogate_letter,) = [m for m in dead if m.value == surrogate]
    assert header(surrogate_letter, "traceparent") == b"t-s"
    # The huge one: cut, its header dropped, both said; the source still has it whole.
    (huge_letter,) = [m for m in dead if m.value == huge[:MAX_DLQ_VALUE_BYTES]]
    assert header(huge_letter, TRUNCATED_HEADER) == str(len(huge)).encode()
    assert header(huge_letter, HEADERS_DROPPED_HEADER) == b"1"
    assert header(huge_letter, "bulk") is None

    # The misplaced reports reached their terminals' states (re-routed to murmur2's partition).
    from streams.pipeline.terminals import terminal_partition

    for i in range(8):
        terminal = f"TR{i}".encode()
        prefix = partition_prefix(
            settings.redis_key_prefix,
            settings.app_id,
            "terminal_windows",
            terminal_partition(terminal, partitions),
        )
        raw = redis_client.get(entry_key(prefix, terminal))
        assert isinstance(raw, bytes), f"report for TR{i} never applied"
        assert len(EntityState.from_bytes(raw).fraud_times) == 1
