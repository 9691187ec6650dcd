"""Scale-out for real: three workers over six partitions, a three-broker Kafka cluster and a
three-master Redis Cluster, with a broker and a worker SIGKILLed mid-stream.

Topics are replicated three times with ``min.insync.replicas=2``, so a broker's death
costs no acknowledged record; the table store keeps each partition under its hash tag,
so the partitions' state is spread over the Redis masters. The checks are those of the
single-node crash test: every transaction scored at least once, customer features exact,
every score at or above the threshold alerted with its stable id, and each terminal state
in the Redis Cluster holding exactly its transactions.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pipeline_harness import (
    Workers,
    check_outputs,
    register_model,
    replay,
    terminal_mismatches,
    wait_until_applied,
)
from redis.cluster import RedisCluster

from features.offline import compute_features
from features.simulator import SimulationConfig, simulate, write_dataset
from streams.kafka import ensure_topics, product_topics
from streams.localinfra import LocalKafkaCluster, LocalRedisCluster
from streams.redisclient import connect_tables, delete_keys
from streams.settings import Settings

pytestmark = pytest.mark.slow

DATA = SimulationConfig(
    customers=200,
    terminals=400,
    days=16,
    compromised_terminals_per_day=1,
    compromised_customers_per_day=1,
    seed=13,
)
# Events per second: the dataset's 5,783 events make about 40 s of stream. The worker is
# killed after the broker's death stalls the survivors (its session timeout, about 10 s
# here, 20 s and more on a slow machine) and they score 500 more: at 300 a second, a slow
# machine's replay had ended by then.
RATE = 150
WORKERS = 3
PARTITIONS = 6


@pytest.fixture
def cluster_settings(
    settings: Settings,
    kafka_cluster: LocalKafkaCluster,
    redis_cluster: LocalRedisCluster,
    tmp_path: Path,
) -> Iterator[Settings]:
    kafka_cluster.start()  # a no-op unless an earlier test stopped it
    yield settings.model_copy(
        update={
            "kafka_bootstrap_servers": kafka_cluster.address,
            "topic_partitions": PARTITIONS,
            "topic_replication_factor": 3,
            "table_store": redis_cluster.store_url,
            "redis_password": redis_cluster.settings.redis_password,
            "model_registry_dir": tmp_path / "registry",
            # A killed worker's partitions move after 6 s, the broker's minimum.
            "kafka_session_timeout_s": 6.0,
            "kafka_heartbeat_interval_s": 1.0,
        }
    )
    kafka_cluster.start()  # bring back the node the test killed


@pytest.fixture
def tables(cluster_settings: Settings) -> Iterator[RedisCluster]:
    """The Redis Cluster the workers' tables live on, through the project's own client."""
    client = connect_tables(cluster_settings)
    assert isinstance(client, RedisCluster)
    yield client
    delete_keys(client, f"{cluster_settings.redis_key_prefix}*")
    client.close()


def test_three_workers_lose_nothing_when_a_broker_and_a_worker_die(
    cluster_settings: Settings,
    kafka_cluster: LocalKafkaCluster,
    tables: RedisCluster,
    tmp_path: Path,
    free_port: Callable[[], int],
) -> None:
    settings = cluster_settings
    transactions = simulate(DATA)
    path = tmp_path / "transactions.parquet"
    write_dataset(transactions, path)
    offline = compute_features(transactions)
    version = register_model(tmp_path / "registry", offline, alert_share=0.05)
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    rng = random.Random(3)

    workers = Workers(settings, tmp_path, free_port)
    started = [workers.start() for _ in range(WORKERS)]
    try:
        for _, port in started:
            workers.wait_ready(port)
        sender = replay(settings, path, "--rate", str(RATE))
        (victim, victim_port), (_, witness_port) = started[0], started[1]
        # A broker dies while every worker is scoring...
        workers.wait_for_metric(victim_port, "fraudstream_transactions_total", 300, 90)
        broker = rng.choice(kafka_cluster.nodes)
        broker.kill()
        # ...then a worker, once the survivors have carried on without that broker.
        seen = workers.metric(witness_port, "fraudstream_transactions_total")
        workers.wait_for_metric(witness_port, "fraudstream_transactions_total", seen + 500, 90)
        assert sender.poll() is None, "the replay ended before the worker's kill: slow it down"
        workers.kill(victim)
        output, _ = sender.communicate(timeout=180)
        assert sender.returncode == 0, output.decode()
        wait_until_applied(settings, tables, transactions)
    finally:
        codes = workers.stop_all()
    assert codes == [0] * (WORKERS - 1), workers.log()
    check_outputs(settings, offline, version)
    assert terminal_mismatches(settings, tables, transactions) == []
    # The state really is spread over the cluster: the partitions' hash tags put it on
    # more than one master (all twelve tags on one master: about 1 in 190,000).
    keys = tables.scan_iter(match=f"{settings.redis_key_prefix}*", count=1000)
    masters = {tables.get_node_from_key(key).name for key in keys}  # type: ignore[no-untyped-call]
    assert len(masters) >= 2, masters
