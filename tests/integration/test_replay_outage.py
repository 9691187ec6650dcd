"""``fraudstream replay`` loses nothing and writes nothing twice when its broker dies.

A spare one-node broker of our own (never the shared one) is SIGKILLed mid-replay, kept
down longer than the replay producer's 30 s request timeout (so a request in flight
times out, not only fails to connect) and started again: the replay waits, then sends
each partition exactly the events it lacks. A replay SIGKILLed itself continues with
``--resume``. Both check every event of the dataset once, in order per partition.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from spare_kafka import kill_broker, spare_broker

from features.simulator import SimulationConfig, simulate, write_dataset
from streams.kafka import client_options, header_items
from streams.localinfra import LocalKafka
from streams.replay.resume import read_mark
from streams.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.slow

#: Longer than the replay producer's request timeout (streams.replay.sender, 30 s).
DOWN_S = 35.0
PARTITIONS = 3


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, free_port: Callable[[], int]
) -> Iterator[LocalKafka]:
    directory = tmp_path_factory.mktemp("outage") / "local"
    with spare_broker(base_settings, directory, free_port) as made:
        yield made


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, Path]:
    frame = simulate(SimulationConfig(customers=60, terminals=200, days=12, seed=11))
    path = tmp_path_factory.mktemp("outage-data") / "tx.parquet"
    write_dataset(frame, path)
    return frame, path


def _client(broker: LocalKafka, base_settings: Settings, name: str) -> Settings:
    return base_settings.model_copy(
        update={
            "kafka_bootstrap_servers": broker.address,
            "topic_prefix": f"{name}-{int(time.time() * 1000)}-",
            "topic_partitions": PARTITIONS,
        }
    )


def _replay(client: Settings, path: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams",
            "--bootstrap-servers",
            client.kafka_bootstrap_servers,
            "--topic-prefix",
            client.topic_prefix,
            "--partitions",
            str(PARTITIONS),
            "replay",
            str(path),
            *options,
        ],
        cwd=PROJECT_ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_data(broker: LocalKafka, client: Settings, at_least: int = 1) -> None:
    """Until the transactions topic has records on disk (read without a Kafka client)."""
    logs = broker.data_dir.glob(f"{client.topic_prefix}transactions-*/*.log")
    deadline = time.monotonic() + 60
    while sum(p.stat().st_size for p in logs) < at_least:
        assert time.monotonic() < deadline, "the replay sent nothing within 60 s"
        time.sleep(0.1)
        logs = broker.data_dir.glob(f"{client.topic_prefix}transactions-*/*.log")


async def _read(client: Settings, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, auto_offset_reset="earliest", **client_options(client)
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        async with asyncio.timeout(60):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


def _assert_every_event_once_in_order(client: Settings, frame: pl.DataFrame) -> int:
    """Every transaction and report once; per partition in replay order. Return the count."""
    reported = frame.filter(pl.col("is_fraud") & pl.col("reported_at").is_not_null()).height
    total = 0
    for role, expected in (("transactions", frame.height), ("fraud_reports", reported)):
        records = asyncio.run(_read(client, client.topic_names[role]))
        copies = Counter(record.value for record in records)
        assert [v for v, n in copies.items() if n > 1] == [], f"{role}: written twice"
        assert len(records) == expected, f"{role}: {len(records)} of {expected}"
        by_partition: dict[int, list[int]] = defaultdict(list)
        for record in records:
            mark = read_mark(header_items(record.headers))
            assert mark is not None
            by_partition[record.partition].append(mark)
        for marks in by_partition.values():
            assert marks == sorted(set(marks)), f"{role}: out of order"
        total += expected
    return total


def test_a_broker_killed_past_the_request_timeout_loses_and_doubles_nothing(
    broker: LocalKafka, base_settings: Settings, dataset: tuple[pl.DataFrame, Path]
) -> None:
    frame, path = dataset
    client = _client(broker, base_settings, "outage")
    replay = _replay(client, path, "--rate", "150", "--outage-timeout", "300")
    try:
        _wait_for_data(broker, client, at_least=20_000)
        kill_broker(broker)
        killed = time.monotonic()
        time.sleep(DOWN_S)
        assert replay.poll() is None, "the replay gave up during the outage"
        broker.start()
        restarted = time.monotonic()
        stdout, stderr = replay.communicate(timeout=120)
        done = time.monotonic()
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.communicate(timeout=30)
    assert replay.returncode == 0, (stdout, stderr)
    assert "rode out 1 Kafka outage(s)" in stdout
    assert stderr.count("Kafka unavailable after") == 1, stderr
    assert stderr.count("Kafka answers again after") == 1, stderr
    assert stderr.count("\n") <= 6, stderr  # not a line per retry
    events = _assert_every_event_once_in_order(client, frame)
    print(
        f"\n{events} events, outage {restarted - killed:.0f} s, "
        f"replay done {done - restarted:.0f} s after the restart"
    )


def test_a_killed_replay_resumes_exactly(
    broker: LocalKafka, base_settings: Settings, dataset: tuple[pl.DataFrame, Path]
) -> None:
    frame, path = dataset
    client = _client(broker, base_settings, "resume")
    replay = _replay(client, path, "--rate", "400")
    try:
        _wait_for_data(broker, client, at_least=50_000)
        replay.kill()
        replay.communicate(timeout=30)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.communicate(timeout=30)
    resumed = _replay(client, path, "--resume")
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, (stdout, stderr)
    assert "resumed: " in stdout
    skipped = int(stdout.split("resumed: ")[1].split()[0])
    assert skipped > 0
    _assert_every_event_once_in_order(client, frame)
