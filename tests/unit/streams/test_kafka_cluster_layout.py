"""The local Kafka cluster without running it: ports, rendered configs, shared id, settings."""

from __future__ import annotations

import os
import random
import socket
import threading
import uuid
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from streams.cli import cli
from streams.localinfra import (
    LocalKafka,
    LocalKafkaCluster,
    LocalKafkaClusterNode,
    LocalRedisCluster,
    kafka,
    local_services,
)
from streams.localinfra.kafkacluster import quorum_voters, shared_cluster_id
from streams.settings import ENV_PREFIX, Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir("/")  # no .env file from a checkout


def properties(text: str) -> dict[str, str]:
    """A rendered server.properties as a dict (comments and blank lines dropped)."""
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


# --- settings ---------------------------------------------------------------------------


def test_the_cluster_ports_and_bootstrap_by_default_and_moved() -> None:
    settings = Settings()
    assert settings.local_kafka_cluster_ports == [9192, 9193, 9194]
    assert settings.local_kafka_cluster_controller_ports == [9195, 9196, 9197]
    assert settings.local_kafka_cluster_bootstrap == "127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194"
    assert settings.local_kafka_cluster_heap == "512m"
    moved = Settings(local_kafka_cluster_port=21000)
    assert moved.local_kafka_cluster_bootstrap == (
        "127.0.0.1:21000,127.0.0.1:21001,127.0.0.1:21002"
    )
    assert moved.local_kafka_cluster_controller_ports == [21003, 21004, 21005]
    # The clients of the product keep pointing at the single broker.
    assert moved.kafka_bootstrap_servers == "127.0.0.1:9092"


@pytest.mark.parametrize(
    ("ports", "culprit"),
    [
        ({"local_kafka_cluster_port": 9092}, "local_kafka_port"),
        ({"local_kafka_cluster_port": 9093}, "local_kafka_controller_port"),  # 9093..9098
        ({"local_kafka_cluster_port": 6374}, "local_redis_port"),  # 6374..6379
        ({"local_kafka_port": 9197}, "local_kafka_port"),  # the last controller port
        ({"local_kafka_cluster_port": 6996}, "local_redis_cluster_port"),  # 7000..7002
        ({"local_kafka_cluster_port": 17002}, "local_redis_cluster_port"),  # its buses
        ({"local_redis_cluster_port": 9190}, "local_redis_cluster_port"),  # 9190..9192
    ],
)
def test_the_cluster_ports_must_not_collide(ports: dict[str, int], culprit: str) -> None:
    with pytest.raises(ValidationError, match=f"collide with {culprit}"):
        Settings(**ports)  # type: ignore[arg-type]


def test_the_cluster_ports_fit_below_65536() -> None:
    assert Settings(local_kafka_cluster_port=65530).local_kafka_cluster_controller_ports[-1] == (
        65535
    )
    with pytest.raises(ValidationError, match="less than or equal to 65530"):
        Settings(local_kafka_cluster_port=65531)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Settings(local_kafka_cluster_port=0)
    with pytest.raises(ValidationError, match="local_kafka_cluster_heap"):
        Settings(local_kafka_cluster_heap="lots")
    # Next to the single broker, but not on it: fine.
    assert Settings(local_kafka_cluster_port=9094).local_kafka_cluster_port == 9094


# --- nodes and the cluster --------------------------------------------------------------


def test_each_node_has_its_id_ports_home_and_the_shared_jars(tmp_path: Path) -> None:
    settings = Settings(local_dir=tmp_path, local_kafka_cluster_port=21000)
    cluster = LocalKafkaCluster(settings)
    assert [n.node_id for n in cluster.nodes] == [1, 2, 3]
    assert [(n.port, n.controller_port) for n in cluster.nodes] == [
        (21000, 21003),
        (21001, 21004),
        (21002, 21005),
    ]
    assert [n.home for n in cluster.nodes] == [
        tmp_path / "kafka-cluster" / str(i) for i in (1, 2, 3)
    ]
    assert sorted(cluster.ports) == list(range(21000, 21006))
    assert cluster.address == settings.local_kafka_cluster_bootstrap
    assert cluster.node(2) is cluster.nodes[1]
    assert cluster.node(3).name == "kafka-cluster node 3"
    jars = LocalKafka(settings).lib_dir
    assert jars == tmp_path / "kafka" / f"lib-{settings.local_kafka_version}"
    assert all(n.lib_dir == jars for n in cluster.nodes)
    assert len({n.process.marker for n in cluster.nodes}) == 3  # one pid per node
    with pytest.raises(ValueError, match="node_id"):
        cluster.node(4)
    with pytest.raises(ValueError, match="node_id"):
        LocalKafkaClusterNode(settings, 0)


def test_a_node_config_has_the_quorum_the_fault_tolerant_defaults_and_loopback_only(
    tmp_path: Path,
) -> None:
    settings = Settings(local_dir=tmp_path, local_kafka_cluster_port=21000)
    node = LocalKafkaCluster(settings).node(2)
    config = properties(node.render_config())
    assert "$" not in node.render_config()
    assert config["node.id"] == "2"
    assert config["process.roles"] == "broker,controller"
    assert config["controller.quorum.voters"] == (
        "1@127.0.0.1:21003,2@127.0.0.1:21004,3@127.0.0.1:21005"
    )
    assert config["controller.quorum.voters"] == quorum_voters(settings)
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:21001,CONTROLLER://127.0.0.1:21004"
    assert config["advertised.listeners"] == "PLAINTEXT://127.0.0.1:21001"
    assert config["log.dirs"] == str(tmp_path / "kafka-cluster" / "2" / "data")
    assert {
        key: config[key]
        for key in (
            "default.replication.factor",
            "min.insync.replicas",
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
            "transaction.state.log.min.isr",
            "auto.create.topics.enable",
            "group.initial.rebalance.delay.ms",
        )
    } == {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
    }
    assert node.heap_options() == ["-Xms512m", "-Xmx512m"]
    assert LocalKafkaClusterNode(
        settings.model_copy(update={"local_kafka_cluster_heap": "384m"}), 1
    ).heap_options() == ["-Xms384m", "-Xmx384m"]


def test_the_single_broker_renders_as_before(tmp_path: Path) -> None:
    settings = Settings(local_dir=tmp_path)
    broker = LocalKafka(settings)
    config = properties(broker.render_config())
    assert config["node.id"] == "1"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert config["offsets.topic.replication.factor"] == "1"
    assert config["log.dirs"] == str(tmp_path / "kafka" / "data")
    assert broker.heap_options() == ["-Xms256m", "-Xmx1g"]
    assert broker.ports == [9092, 9093]
    assert broker.home == tmp_path / "kafka"
    assert broker.name == "kafka"
    assert broker.cluster_id() != broker.cluster_id()  # a new cluster each format


def test_every_node_formats_with_one_cluster_id_chosen_once(tmp_path: Path) -> None:
    nodes = LocalKafkaCluster(Settings(local_dir=tmp_path)).nodes
    first = nodes[0].cluster_id()
    assert len(first) == 22  # a base64 UUID, as kafka-storage random-uuid makes
    assert [n.cluster_id() for n in nodes] == [first] * 3
    assert (tmp_path / "kafka-cluster" / "cluster.id").read_text() == first + "\n"


def test_racing_nodes_agree_on_one_cluster_id(tmp_path: Path) -> None:
    path = tmp_path / "cluster" / "cluster.id"
    got: list[str] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        got.append(shared_cluster_id(path, lambda: f"id-{threading.get_ident()}"))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(got)) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["cluster.id"]  # nothing aside


def test_a_node_not_running_is_not_killed(tmp_path: Path) -> None:
    node = LocalKafkaCluster(Settings(local_dir=tmp_path)).node(1)
    assert node.kill() is None


def test_the_kafka_cluster_is_started_only_by_name(tmp_path: Path) -> None:
    settings = Settings(local_dir=tmp_path)
    assert [s.name for s in local_services(settings)] == ["kafka", "redis"]
    assert [type(s) for s in local_services(settings, only="kafka-cluster")] == [LocalKafkaCluster]
    assert [type(s) for s in local_services(settings, only="redis-cluster")] == [LocalRedisCluster]
    with pytest.raises(NotImplementedError):
        LocalKafkaCluster(settings).prepare()


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_six() -> int:
    """A first port P with P..P+5 free on 127.0.0.1 (nothing answers there)."""
    for _ in range(1000):
        first = random.randint(20_000, 30_000)
        if all(_is_free(first + i) for i in range(6)):
            return first
    raise RuntimeError("no six consecutive free ports")


def test_infra_status_only_kafka_cluster_reports_it_stopped_and_exits_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FRAUDSTREAM_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("FRAUDSTREAM_LOCAL_KAFKA_CLUSTER_PORT", str(_free_six()))
    result = CliRunner().invoke(cli, ["infra", "status", "--only", "kafka-cluster"])
    assert result.exit_code == 3, result.output
    assert result.output.splitlines() == ["kafka-cluster: stopped"]


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # The storage tool would take "-t -..." for an option: one random id in 64 failed.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    assert urlsafe_b64encode(b"\xf8" + bytes(15)).startswith(b"-")
    cluster = kafka.new_cluster_id()
    assert cluster == urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")
    assert not cluster.startswith("-")
