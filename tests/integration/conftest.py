"""Integration fixtures: the real local Kafka broker and redis-server, shared per session.

The session starts the local services (idempotent: already running is fine), unless the
settings point elsewhere (FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS / FRAUDSTREAM_REDIS_URL), in
which case those must answer. Every test gets settings with a unique topic prefix, Redis
key prefix and app id, so runs and tests never see each other's data.
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from replays import stop_replays

from streams.app import create_app
from streams.localinfra import (
    LocalKafka,
    LocalKafkaCluster,
    LocalRedisCluster,
    ServiceError,
    local_services,
)
from streams.settings import CLUSTER_BUS_OFFSET, KAFKA_CLUSTER_NODES, Settings
from streams.tablestore import RedisStore

#: Session fixtures whose services cost CPU while idle (three Kafka brokers take a tenth
#: of a core each): their tests run one after another, and the services stop after the
#: last of them instead of at the end of the session.
STOPPED_AFTER_LAST_USER = ("kafka_cluster",)

#: Session fixtures that each start several servers: under pytest-xdist (`make pytest`
#: runs two processes) their tests go to one process, so that one set runs.
ONE_PROCESS = ("kafka_cluster", "redis_cluster")
#: The xdist group of those tests and of the ones marked ``cpu_bound``: they run one after
#: another, never two at once (two of them on 2 cores doubled each one's time).
ONE_AT_A_TIME = "one-at-a-time"


def _uses(item: pytest.Item, fixture: str) -> bool:
    return fixture in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("cpu_bound") or any(
            _uses(item, fixture) for fixture in ONE_PROCESS
        ):
            item.add_marker(pytest.mark.xdist_group(ONE_AT_A_TIME))
    for fixture in STOPPED_AFTER_LAST_USER:
        users = [item for item in items if _uses(item, fixture)]
        if len(users) < 2:
            continue
        first = items.index(users[0])
        rest = [item for item in items if not _uses(item, fixture)]
        items[:] = rest[:first] + users + rest[first:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Stop a `STOPPED_AFTER_LAST_USER` service once no later test uses it."""
    yield
    for fixture in STOPPED_AFTER_LAST_USER:
        if _uses(item, fixture) and (nextitem is None or not _uses(nextitem, fixture)):
            service = getattr(item, "funcargs", {}).get(fixture)
            if service is not None:
                service.stop()


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def local_infra(base_settings: Settings) -> Settings:
    """Make sure Kafka and Redis answer before any integration test runs."""
    local = {
        "kafka": base_settings.kafka_bootstrap_servers
        == f"127.0.0.1:{base_settings.local_kafka_port}",
        "redis": base_settings.redis_url.startswith(
            f"redis://127.0.0.1:{base_settings.local_redis_port}"
        ),
    }
    for service in local_services(base_settings):
        if not local[service.name]:
            continue
        try:
            service.start()
        except ServiceError as exc:
            pytest.fail(f"local {service.name} cannot start: {exc}")
    return base_settings


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(local_infra: Settings, run_id: str) -> Settings:
    """Settings isolated for one test: own topics, own Redis keys, own consumer group."""
    return local_infra.model_copy(
        update={
            "app_id": f"fraudstream-test-{run_id}",
            "topic_prefix": f"test-{run_id}-",
            "redis_key_prefix": f"test:{run_id}",
            "topic_partitions": 3,
        }
    )


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    password = settings.redis_password
    client = redis.Redis.from_url(
        settings.redis_url, password=password.get_secret_value() if password else None
    )
    yield client
    keys = list(client.scan_iter(match=f"{settings.redis_key_prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


#: First ports of the local clusters (Redis Cluster: P..P+2, buses P+10000..P+10002; Kafka
#: cluster: P..P+5). Single ports come from above them and below the buses, so neither
#: picks the other's ports; all are below the ephemeral range (32768 on Linux).
CLUSTER_FIRST_PORTS = (20_000, 21_000)
SINGLE_PORTS = (21_000, 20_000 + CLUSTER_BUS_OFFSET)


def _single_ports() -> tuple[int, int]:
    """The single ports this test process picks from: a slice of its own under
    pytest-xdist (PYTEST_XDIST_WORKER is gw0, gw1, ...), so two processes never pick the
    same port between one's check and its server's bind."""
    first, end = SINGLE_PORTS
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker.startswith("gw") and count > 1:
        size = (end - first) // count
        first += int(worker[2:]) * size
        end = first + size
    return first, end


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A function returning a free TCP port on 127.0.0.1, outside the ephemeral range,
    never the same twice in a session.

    Ports from the ephemeral range (what binding to port 0 gives) can be taken at any
    moment by an outgoing connection, and a connect to one of them can even connect to
    itself; a service started on such a port in a test would be flaky.
    """
    first, end = _single_ports()
    low, _ = _ephemeral_range()
    assert end <= low, f"the ephemeral range starts at {low}: under the test ports"
    taken: set[int] = set()

    def pick() -> int:
        for _ in range(1000):
            port = random.randint(first, end - 1)
            if port in taken or not _port_is_free(port):
                continue
            taken.add(port)
            return port
        raise RuntimeError("no free port below the ephemeral range")

    return pick


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def free_cluster_port() -> Callable[[], int]:
    """A function returning a first port P with P..P+2 free for a local Redis Cluster,
    and their cluster buses P+10000..P+10002 too, all below the ephemeral range (see
    the free_port fixture)."""
    low, end = CLUSTER_FIRST_PORTS

    def pick() -> int:
        for _ in range(1000):
            first = random.randint(low, end - 3)
            ports = [first + i for i in range(3)]
            ports += [port + CLUSTER_BUS_OFFSET for port in ports]
            if all(_port_is_free(port) for port in ports):
                return first
        raise RuntimeError("no three consecutive free ports (and buses) below the ephemeral range")

    return pick


@pytest.fixture(scope="session")
def free_kafka_cluster_port() -> Callable[[], int]:
    """A function returning a first port P with P..P+5 free for a local Kafka cluster
    (three client ports, then three controller ports), all below the ephemeral range (see
    the free_port fixture)."""
    low, end = CLUSTER_FIRST_PORTS
    span = 2 * KAFKA_CLUSTER_NODES

    def pick() -> int:
        for _ in range(1000):
            first = random.randint(low, end - span)
            if all(_port_is_free(first + i) for i in range(span)):
                return first
        raise RuntimeError(f"no {span} consecutive free ports below the ephemeral range")

    return pick


@pytest.fixture(scope="session")
def kafka_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    base_settings: Settings,
    free_kafka_cluster_port: Callable[[], int],
) -> Iterator[LocalKafkaCluster]:
    """The local three-broker Kafka cluster on free ports in a temporary local_dir, not
    started: tests start it (a no-op when it runs), so a test that stopped or crashed a
    node leaves nothing broken for the next. Stopped at the end of the session.

    It uses the jars the single broker resolved (`fraudstream infra up` ran before the
    tests), linked in rather than resolved again.
    """
    jars = LocalKafka(base_settings).lib_dir
    if not (jars / ".complete").exists():
        pytest.fail(f"no Kafka jars in {jars}: run `fraudstream infra up` before the tests")
    settings = Settings(
        local_dir=tmp_path_factory.mktemp("kafka-cluster") / "local",
        local_kafka_cluster_port=free_kafka_cluster_port(),
    )
    linked = LocalKafka(settings).lib_dir
    linked.parent.mkdir(parents=True)
    linked.symlink_to(jars, target_is_directory=True)
    made = LocalKafkaCluster(settings)
    yield made
    made.stop()


@pytest.fixture(scope="session")
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory, free_cluster_port: Callable[[], int]
) -> Iterator[LocalRedisCluster]:
    """The local three-master Redis Cluster on free ports in a temporary local_dir,
    started; stopped at the end of the session."""
    made = LocalRedisCluster(
        Settings(
            local_dir=tmp_path_factory.mktemp("redis-cluster"),
            local_redis_cluster_port=free_cluster_port(),
        )
    )
    try:
        made.start()
        yield made
    finally:
        made.stop()


@pytest.fixture
def make_store() -> Iterator[Callable[..., RedisStore]]:
    """Make a table's store the way Faust does (``table.data`` of a ``create_app`` app),
    never started: a new app each time, as another worker's store would be."""
    opened: list[RedisStore] = []

    def make(
        settings: Settings, table: str, partitions: int, store_url: str, **options: Any
    ) -> RedisStore:
        app = create_app(settings.model_copy(update={"table_store": store_url}), web_enabled=False)
        store = app.Table(table, partitions=partitions, options=options or None).data
        assert isinstance(store, RedisStore)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.backend.close()


@pytest.fixture(autouse=True)
def _replays_end_with_their_test() -> Iterator[None]:
    """No replay outlives the test that started it (`replays.stop_replays`)."""
    yield
    stop_replays()
