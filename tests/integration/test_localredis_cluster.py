"""The local Redis Cluster for real: three masters created, restarted, stopped.

The cluster runs in a temporary local_dir on free ports, so nothing of the session's
shared Kafka and redis-server is touched.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from streams.localinfra import LocalRedis, LocalRedisCluster, local_services
from streams.settings import CLUSTER_BUS_OFFSET, Settings


def listening_addresses(pid: int) -> set[str]:
    """Local addresses the process listens on, from `ss`."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={pid}," in line}


def is_gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"


@pytest.fixture
def cluster(tmp_path: Path, free_cluster_port: Callable[[], int]) -> Iterator[LocalRedisCluster]:
    made = LocalRedisCluster(
        Settings(local_dir=tmp_path / "local", local_redis_cluster_port=free_cluster_port())
    )
    yield made
    made.stop()


def node_client(settings: Settings, port: int) -> redis.Redis:
    password = settings.redis_password
    return redis.Redis(
        host="127.0.0.1", port=port, password=password.get_secret_value() if password else None
    )


def test_the_cluster_is_created_serves_every_slot_and_stops_cleanly(
    cluster: LocalRedisCluster,
) -> None:
    settings = cluster.settings
    assert "created and started" in cluster.start()
    status = cluster.status()
    assert status.healthy, status
    assert "already running" in cluster.start()

    pids = [node.status().pid for node in cluster.nodes]
    assert all(pid is not None for pid in pids)
    assert len(set(pids)) == 3
    for port, pid in zip(settings.local_redis_cluster_ports, pids, strict=True):
        assert pid is not None
        addresses = listening_addresses(pid)
        assert f"127.0.0.1:{port}" in addresses
        assert f"127.0.0.1:{port + CLUSTER_BUS_OFFSET}" in addresses
        assert all(a.startswith("127.0.0.1:") for a in addresses), addresses
        client = node_client(settings, port)
        try:
            info = client.cluster("INFO")
        finally:
            client.close()
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == 16384
        assert int(info["cluster_slots_ok"]) == 16384
        assert int(info["cluster_known_nodes"]) == 3
        assert int(info["cluster_size"]) == 3  # three masters, each with slots

    client = node_client(settings, settings.local_redis_cluster_port + 1)
    try:
        slots = client.cluster("SLOTS")  # [[first, last, [host, port, id, ...]], ...]
    finally:
        client.close()
    served: dict[str, int] = {}
    for first, last, (host, port, *_) in slots:
        address = f"{host.decode()}:{port}"
        served[address] = served.get(address, 0) + last - first + 1
    assert sum(served.values()) == 16384
    assert set(served) == {node.address for node in cluster.nodes}

    assert cluster.stop() == "redis-cluster stopped"
    assert all(pid is not None and is_gone(pid) for pid in pids)
    stopped = cluster.status()
    assert stopped.pid is None
    assert not stopped.answering
    assert str(stopped) == "redis-cluster: stopped"
    assert cluster.stop() == "redis-cluster was not running"


def test_a_restarted_cluster_is_the_same_cluster_with_its_data(
    cluster: LocalRedisCluster,
) -> None:
    settings = cluster.settings
    cluster.start()
    password = settings.redis_password
    client = RedisCluster(
        host="127.0.0.1",
        port=settings.local_redis_cluster_port,
        password=password.get_secret_value() if password else None,
    )
    try:
        for i in range(30):
            client.set(f"key-{i}", i)
        ids = {node.address: node_client(settings, node.port) for node in cluster.nodes}
        before = {address: c.cluster("MYID") for address, c in ids.items()}
    finally:
        client.close()
        for c in ids.values():
            c.close()

    cluster.stop()
    message = cluster.start()
    assert "created" not in message  # found again from the nodes files, not made anew
    assert cluster.status().healthy

    client = RedisCluster(
        host="127.0.0.1",
        port=settings.local_redis_cluster_port + 2,  # any node leads to all
        password=password.get_secret_value() if password else None,
    )
    ids = {node.address: node_client(settings, node.port) for node in cluster.nodes}
    try:
        assert [client.get(f"key-{i}") for i in range(30)] == [str(i).encode() for i in range(30)]
        assert {address: c.cluster("MYID") for address, c in ids.items()} == before
    finally:
        client.close()
        for c in ids.values():
            c.close()


def test_half_a_cluster_is_reported_and_start_completes_it(cluster: LocalRedisCluster) -> None:
    cluster.start()
    middle = cluster.nodes[1]
    assert middle.stop() == f"{middle.name} stopped"

    status = cluster.status()
    assert status.pid is not None
    assert not status.healthy
    assert f"{middle.address} stopped" in str(status)

    assert "started" in cluster.start()
    assert cluster.status().healthy


def test_the_cluster_is_never_among_the_default_services(tmp_path: Path) -> None:
    settings = Settings(local_dir=tmp_path)
    assert [s.name for s in local_services(settings)] == ["kafka", "redis"]
    only = local_services(settings, only="redis-cluster")
    assert [type(s) for s in only] == [LocalRedisCluster]
    assert [type(s) for s in local_services(settings, only="redis")] == [LocalRedis]


def test_a_password_protects_every_node_and_stays_off_command_lines(
    tmp_path: Path, free_cluster_port: Callable[[], int]
) -> None:
    secret = "cluster-secret-789"
    cluster = LocalRedisCluster(
        Settings(
            local_dir=tmp_path / "local",
            local_redis_cluster_port=free_cluster_port(),
            redis_password=secret,
        )
    )
    try:
        assert "created and started" in cluster.start()  # redis-cli authenticated too
        assert cluster.status().healthy
        for node in cluster.nodes:
            anonymous = redis.Redis(host="127.0.0.1", port=node.port, retry=Retry(NoBackoff(), 0))
            try:
                with pytest.raises(redis.AuthenticationError):
                    anonymous.ping()
            finally:
                anonymous.close()
            pid = node.status().pid
            assert pid is not None
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            assert node.config_file.stat().st_mode & 0o777 == 0o600
    finally:
        cluster.stop()
