"""redis://...?cluster=true: the store on a real three-master Redis Cluster.

A local cluster (``LocalRedisCluster``) runs for this module on free ports in a temporary
directory. Stores are made as in test_store_positions.py (``table.data`` of a table of an
app from ``create_app``, never started, flushed by the test itself), one app id for all
tests, so the partitions' hash tags, hence their slots and masters, are the same on every
run; each test keeps to its own key namespace (outside the hash tag).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
from faust.types import TP
from redis.cluster import RedisCluster

from streams.localinfra import LocalRedisCluster
from streams.redisclient import connect_tables, delete_keys
from streams.settings import Settings
from streams.tablestore import RedisStore
from streams.tablestore.backend import PartitionWrite, is_retryable
from streams.tablestore.keys import (
    OWNER_FIELD,
    entry_key,
    entry_pattern,
    offset_field,
    offsets_key,
    partition_prefix,
)

APP_ID = "fraudstream-cluster-test"
TABLE = "spread"
PARTITIONS = 6
SOURCE = "transactions"

OpenStore = Callable[..., Awaitable[RedisStore]]


@pytest.fixture(scope="module")
def cluster(redis_cluster: LocalRedisCluster) -> LocalRedisCluster:
    return redis_cluster


@pytest.fixture(scope="module")
def admin(cluster: LocalRedisCluster) -> Iterator[RedisCluster]:
    password = cluster.settings.redis_password
    client = RedisCluster(
        host="127.0.0.1",
        port=cluster.settings.local_redis_cluster_port,
        password=password.get_secret_value() if password else None,
    )
    yield client
    client.close()


@pytest.fixture
def settings(base_settings: Settings, cluster: LocalRedisCluster) -> Settings:
    namespace = f"test:{uuid.uuid4().hex[:10]}"
    return base_settings.model_copy(
        update={
            "app_id": APP_ID,
            "redis_key_prefix": namespace,
            "table_store": cluster.store_url,
            "redis_password": cluster.settings.redis_password,
        }
    )


@pytest.fixture
def open_store(settings: Settings, make_store: Callable[..., RedisStore]) -> OpenStore:
    """Make a store of the test's table (a new app each time: another worker's store)."""

    async def make(store_url: str | None = None, **options: Any) -> RedisStore:
        return make_store(settings, TABLE, PARTITIONS, store_url or settings.table_store, **options)

    return make


def prefix(settings: Settings, partition: int) -> bytes:
    return partition_prefix(settings.redis_key_prefix, APP_ID, TABLE, partition)


def tp(settings: Settings, partition: int) -> TP:
    return TP(settings.topic(SOURCE), partition)


def fill(store: RedisStore, settings: Settings, keys: int = 3, first_offset: int = 10) -> None:
    """Write ``keys`` entries into every partition, as events first_offset, +1, ..."""
    for partition in range(PARTITIONS):
        for i in range(keys):
            store.put_at(
                tp(settings, partition),
                first_offset + i,
                f"K{i}".encode(),
                f"p{partition}-v{i}".encode(),
            )


def node_of(cluster: LocalRedisCluster, settings: Settings, partition: int) -> str:
    """The master holding the partition, asked of every node (one must say all its keys)."""
    holders = []
    password = settings.redis_password
    key = offsets_key(prefix(settings, partition))
    for node in cluster.nodes:
        client = redis.Redis(
            host="127.0.0.1",
            port=node.port,
            password=password.get_secret_value() if password else None,
        )
        try:
            slot = int(client.cluster("KEYSLOT", key))
            if int(client.cluster("COUNTKEYSINSLOT", slot)) > 0:
                holders.append(node.address)
        finally:
            client.close()
    assert len(holders) == 1, holders  # a partition's keys all live on one master
    return holders[0]


async def test_partitions_flush_to_several_masters_and_a_fresh_store_reads_them_back(
    settings: Settings, cluster: LocalRedisCluster, admin: RedisCluster, open_store: OpenStore
) -> None:
    store = await open_store()
    assert store.config.cluster
    fill(store, settings)
    await store.flush(wait_for_producer=False)

    fresh = await open_store()
    for partition in range(PARTITIONS):
        for i in range(3):
            assert fresh.get_in(partition, f"K{i}".encode()) == f"p{partition}-v{i}".encode()
        assert fresh.get_in(partition, b"absent") is None
        # The offsets were written by the same script as the data: the next to read.
        offsets = fresh.backend.read_offsets(prefix(settings, partition))
        assert offsets[offset_field(settings.topic(SOURCE), partition)] == b"13"
        entry = entry_key(prefix(settings, partition), b"K0")
        assert admin.pttl(entry) > 0  # with the TTL

    masters = {node_of(cluster, settings, p) for p in range(PARTITIONS)}
    assert len(masters) >= 2, masters


async def test_a_flush_writes_data_and_offsets_together_or_not_at_all(
    settings: Settings, admin: RedisCluster, open_store: OpenStore
) -> None:
    store = await open_store()
    fill(store, settings, keys=2, first_offset=100)
    # Before the flush, only the registered start offsets are there, and no entries.
    for partition in range(PARTITIONS):
        offsets = store.backend.read_offsets(prefix(settings, partition))
        assert offsets[offset_field(settings.topic(SOURCE), partition)] == b"100"
        assert admin.get(entry_key(prefix(settings, partition), b"K0")) is None
    await store.flush(wait_for_producer=False)
    for partition in range(PARTITIONS):
        offsets = store.backend.read_offsets(prefix(settings, partition))
        assert offsets[offset_field(settings.topic(SOURCE), partition)] == b"102"
        assert admin.get(entry_key(prefix(settings, partition), b"K1")) == (
            f"p{partition}-v1".encode()
        )


async def test_a_claimed_partition_fences_the_former_owners_flush(
    settings: Settings, admin: RedisCluster, open_store: OpenStore
) -> None:
    old = await open_store()
    fill(old, settings, keys=1, first_offset=5)
    await old.flush(wait_for_producer=False)  # never claimed anything: no owner yet

    new = await open_store()
    taken = [1, 4]
    previous = new.backend.claim([prefix(settings, p) for p in taken], "new-worker:3")
    assert previous == [None, None]
    for partition in range(PARTITIONS):
        old.put_at(tp(settings, partition), 6, b"K0", b"stale")
    await old.flush(wait_for_producer=False)

    for partition in range(PARTITIONS):
        stored = admin.get(entry_key(prefix(settings, partition), b"K0"))
        offsets = old.backend.read_offsets(prefix(settings, partition))
        source = offset_field(settings.topic(SOURCE), partition)
        if partition in taken:
            # Refused as a whole: neither the entry nor its offset moved.
            assert stored == f"p{partition}-v0".encode()
            assert offsets[source] == b"6"
            assert offsets[OWNER_FIELD] == b"new-worker:3"
            assert old.get_in(partition, b"K0") == stored  # the cache was dropped
        else:
            assert stored == b"stale"
            assert offsets[source] == b"7"

    # The new owner writes; the claim reports who held the partition.
    write = PartitionWrite(
        prefix(settings, 1),
        {entry_key(prefix(settings, 1), b"K0"): b"fresh"},
        {offset_field(settings.topic(SOURCE), 1): 8},
    )
    assert await new.backend.write([write], "new-worker:3") == set()
    assert admin.get(entry_key(prefix(settings, 1), b"K0")) == b"fresh"
    assert new.backend.claim([prefix(settings, 1)], "newer-worker:4") == [b"new-worker:3"]
    assert await new.backend.write([write], "new-worker:3") == {prefix(settings, 1)}


async def test_prefetch_and_peek_read_every_partition_in_one_go(
    settings: Settings, admin: RedisCluster, open_store: OpenStore
) -> None:
    writer = await open_store()
    fill(writer, settings, keys=3)
    await writer.flush(wait_for_producer=False)

    reader = await open_store()
    wanted = {p: [b"K0", b"K2", b"absent"] for p in range(PARTITIONS)}
    reader.prefetch(wanted)
    for partition in range(PARTITIONS):
        admin.delete(entry_key(prefix(settings, partition), b"K2"))
    # Served from the cache now, Redis's copy gone.
    for partition in range(PARTITIONS):
        assert reader.get_in(partition, b"K2") == f"p{partition}-v2".encode()
        assert reader.get_in(partition, b"absent") is None

    peeker = await open_store()
    peeked = peeker.peek({p: [b"K1", b"K2", b"absent"] for p in range(PARTITIONS)})
    assert peeked == {p: [f"p{p}-v1".encode(), None, None] for p in range(PARTITIONS)}
    # A worker's own unflushed write wins over Redis.
    writer.put_at(tp(settings, 3), 50, b"K1", b"dirty")
    assert writer.peek({3: [b"K1"], 5: [b"K1"]}) == {3: [b"dirty"], 5: [b"p5-v1"]}


async def test_iteration_and_clear_cover_the_partitions_on_every_master(
    settings: Settings, cluster: LocalRedisCluster, admin: RedisCluster, open_store: OpenStore
) -> None:
    writer = await open_store()
    fill(writer, settings, keys=4)
    await writer.flush(wait_for_producer=False)

    store = await open_store()
    for partition in range(PARTITIONS):
        store.get_in(partition, b"K0")  # the partition is now one the store serves
    store.put_at(tp(settings, 2), 30, b"K9", b"unflushed")
    items = dict(store._iteritems())
    assert len(items) == 4 + 1  # keys repeat over partitions: one of each, plus K9
    assert sorted(store._partition_items(5)) == [
        (f"K{i}".encode(), f"p5-v{i}".encode()) for i in range(4)
    ]
    assert store._size() == 4 * PARTITIONS + 1

    store._clear()
    for partition in range(PARTITIONS):
        pattern = entry_pattern(prefix(settings, partition))
        assert list(admin.scan_iter(match=pattern)) == []
        assert admin.exists(offsets_key(prefix(settings, partition)))  # offsets stay
    fresh = await open_store()
    assert all(fresh.get_in(p, b"K0") is None for p in range(PARTITIONS))


async def test_a_store_made_while_the_cluster_is_unreachable_waits_instead_of_failing(
    open_store: OpenStore, free_cluster_port: Callable[[], int]
) -> None:
    nobody = free_cluster_port()
    store = await open_store(f"redis://127.0.0.1:{nobody}/0?cluster=true")  # no error yet
    with pytest.raises(redis.RedisClusterException) as caught:
        store.backend.ping()
    assert is_retryable(caught.value)  # the backend retries it with backoff


async def test_a_master_restarting_blocks_its_reads_until_it_is_back(
    settings: Settings, cluster: LocalRedisCluster, open_store: OpenStore
) -> None:
    writer = await open_store()
    fill(writer, settings, keys=1)
    await writer.flush(wait_for_producer=False)
    reader = await open_store()
    assert reader.get_in(0, b"absent") is None  # connected, slot map known

    address = node_of(cluster, settings, 0)
    node = next(n for n in cluster.nodes if n.address == address)
    node.stop()
    restart = threading.Timer(1.0, node.start)
    restart.start()
    started = time.monotonic()
    try:
        # Blocks (backoff) while the master is down, then reads what it kept.
        assert reader.get_in(0, b"K0") == b"p0-v0"
    finally:
        restart.join()
    assert time.monotonic() - started >= 0.9
    cluster.start()  # until the cluster says ok again
    assert cluster.status().healthy


async def test_tools_delete_a_runs_keys_on_every_master(
    settings: Settings, admin: RedisCluster, open_store: OpenStore
) -> None:
    store = await open_store()
    fill(store, settings)
    await store.flush(wait_for_producer=False)
    pattern = f"{settings.redis_key_prefix}:*"
    assert len(list(admin.scan_iter(match=pattern))) > 0
    client = connect_tables(settings)  # what the demo's and the benchmarks' cleanups use
    try:
        assert isinstance(client, RedisCluster)
        deleted = delete_keys(client, pattern)
    finally:
        client.close()
    # Six partitions' entries (3 each) and offsets hashes, over several masters.
    assert deleted == PARTITIONS * 4
    assert list(admin.scan_iter(match=pattern)) == []
