"""The local three-broker Kafka cluster for real: up, a node crashed and back, down.

The cluster runs in a temporary local_dir on free ports, so nothing of the session's
shared Kafka and redis-server is touched; it uses the jars the single broker resolved
(``fraudstream infra up`` ran before the tests), linked in rather than resolved again.
One cluster serves the whole module: three JVMs take seconds to start on a small machine.
Every test starts it first (a no-op when it runs), so each also runs alone.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka import TopicSpec, client_options, describe_topic_configs, ensure_topics
from streams.localinfra import LocalKafkaCluster, LocalKafkaClusterNode
from streams.settings import Settings

#: Messages produced before the crash, and as many again after it.
MESSAGES = 600


def listening_addresses(pid: int) -> set[str]:
    """Local addresses the process (and its threads) listen on, from `ss`.

    A JVM listens on IPv6 sockets: 127.0.0.1 shows as [::ffff:127.0.0.1], written as
    IPv4 here.
    """
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return {
        line.split()[3].replace("[::ffff:127.0.0.1]", "127.0.0.1")
        for line in out.splitlines()
        if f"pid={pid}," in line
    }


def is_gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"


def processes_mentioning(path: Path) -> list[int]:
    """Live processes whose command line names ``path`` (a node's config, say)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and not is_gone(int(proc.name)):
            try:
                if str(path).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(0.2)


@pytest.fixture
def cluster(kafka_cluster: LocalKafkaCluster) -> LocalKafkaCluster:
    return kafka_cluster


def test_up_waits_for_three_brokers_is_idempotent_and_binds_loopback_only(
    cluster: LocalKafkaCluster,
) -> None:
    settings = cluster.settings
    message = cluster.start()
    assert "started at" in message or "already running" in message
    status = cluster.status()
    assert status.healthy, status
    assert cluster.brokers() == {1, 2, 3}
    assert settings.local_kafka_cluster_bootstrap in message

    pids = [node.status().pid for node in cluster.nodes]
    assert "already running" in cluster.start()
    assert [node.status().pid for node in cluster.nodes] == pids

    for node in cluster.nodes:
        pid = node.status().pid
        assert pid is not None
        addresses = listening_addresses(pid)
        assert f"127.0.0.1:{node.port}" in addresses
        assert f"127.0.0.1:{node.controller_port}" in addresses
        assert all(a.startswith("127.0.0.1:") for a in addresses), addresses

    described = asyncio.run(describe_cluster(cluster.client_settings()))
    assert sorted((b["node_id"], f"{b['host']}:{b['port']}") for b in described["brokers"]) == [
        (node.node_id, node.address) for node in cluster.nodes
    ]
    assert described["controller_id"] in (1, 2, 3)


def test_a_node_killed_hard_loses_no_acknowledged_record_and_comes_back(
    cluster: LocalKafkaCluster,
) -> None:
    cluster.start()
    settings = cluster.client_settings()
    topic = f"ft-{uuid.uuid4().hex[:10]}"
    asyncio.run(
        ensure_topics(settings, [TopicSpec(topic, 3, 3, config={"min.insync.replicas": "2"})])
    )
    # ensure_topics saw the leaders through one broker; another may learn of the topic
    # from the controller a moment later (metadata reaches the brokers asynchronously),
    # and each describe may ask a different broker: keep the first complete answer.
    described: list[list[dict[str, Any]]] = []

    def complete() -> bool:
        described.append(asyncio.run(describe_partitions(settings, topic)))
        return sorted(p["partition"] for p in described[-1]) == [0, 1, 2]

    wait_for(complete, f"a broker describes every partition of {topic}")
    partitions = described[-1]
    assert all(sorted(p["replicas"]) == [1, 2, 3] for p in partitions)
    assert asyncio.run(topic_setting(settings, topic, "min.insync.replicas")) == "2"

    # The leader of partition 0 crashes between two halves of the messages.
    victim = cluster.node(next(p["leader"] for p in partitions if p["partition"] == 0))
    sent = asyncio.run(produce_with_a_crash(settings, topic, victim))

    down = cluster.status()
    assert not down.healthy
    assert victim.status().pid is None
    assert f"{victim.address} stopped" in str(down)

    received = asyncio.run(consume_all(settings, topic, expected=len(sent)))
    counts = Counter(received)
    assert set(counts) == set(sent), "acknowledged records lost"
    assert max(counts.values()) == 1, "records duplicated"

    assert "started" in victim.start()  # same data directory: log recovery, then catch-up
    assert cluster.status().healthy
    wait_for(
        lambda: all(
            sorted(p["isr"]) == [1, 2, 3] for p in asyncio.run(describe_partitions(settings, topic))
        ),
        f"node {victim.node_id} back in sync",
    )


def test_down_stops_every_node_and_leaves_no_process(cluster: LocalKafkaCluster) -> None:
    cluster.start()
    pids = [node.status().pid for node in cluster.nodes]
    assert all(pid is not None for pid in pids)

    assert cluster.stop() == "kafka-cluster stopped"
    assert all(pid is not None and is_gone(pid) for pid in pids)
    for node in cluster.nodes:
        assert processes_mentioning(node.config_file) == []
        assert not node.process.pid_file.exists()
    stopped = cluster.status()
    assert stopped.pid is None
    assert not stopped.answering
    assert str(stopped) == "kafka-cluster: stopped"
    assert cluster.stop() == "kafka-cluster was not running"


async def describe_cluster(settings: Settings) -> dict[str, Any]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described: dict[str, Any] = await admin.describe_cluster()
        return described
    finally:
        await admin.close()


async def describe_partitions(settings: Settings, topic: str) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        partitions: list[dict[str, Any]] = described["partitions"]
        return partitions
    finally:
        await admin.close()


async def topic_setting(settings: Settings, topic: str, name: str) -> str | None:
    """One config of a topic, as the product reads configs: asked again while the broker
    asked has not yet learned of the topic (`streams.kafka.describe_topic_configs`)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        (described,) = await describe_topic_configs(admin, [topic], [name])
    finally:
        await admin.close()
    return described.configs.get(name)


async def produce_with_a_crash(
    settings: Settings, topic: str, victim: LocalKafkaClusterNode
) -> list[str]:
    """Send MESSAGES, crash the victim, send MESSAGES more; return what was acknowledged.

    acks=all with an idempotent producer: every message counts as sent only when the
    in-sync replicas have it, and retries through the leader change add no duplicate.
    """
    producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:

        async def send(numbers: range) -> list[str]:
            values = [f"m-{i}" for i in numbers]
            sends = [
                await producer.send(topic, key=str(i).encode(), value=v.encode())
                for i, v in zip(numbers, values, strict=True)
            ]
            await asyncio.gather(*sends)
            return values

        sent = await send(range(MESSAGES))
        await asyncio.to_thread(victim.kill)
        sent += await send(range(MESSAGES, 2 * MESSAGES))
        return sent
    finally:
        await producer.stop()


async def consume_all(settings: Settings, topic: str, expected: int) -> list[str]:
    """Every record of the topic, from the beginning, once ``expected`` have arrived."""
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    received: list[str] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        async with asyncio.timeout(60):
            while len(received) < expected:
                batches = await consumer.getmany(timeout_ms=500)
                received += [r.value.decode() for rs in batches.values() for r in rs]
        # Anything more would be a duplicate: look once more.
        batches = await consumer.getmany(timeout_ms=500)
        received += [r.value.decode() for rs in batches.values() for r in rs]
        return received
    finally:
        await consumer.stop()
