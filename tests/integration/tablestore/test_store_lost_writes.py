"""redis:// when Redis forgets writes it acknowledged: detected, and replayed exactly.

With ``appendfsync everysec`` a crash of the machine loses the last second of writes
Redis acknowledged; a Redis restarted without its files holds nothing. The first tests
check the flush count the store keeps in each partition's offsets hash, against the
shared Redis. The slow ones run the counting app (tests/integration/tablestore/
counting_app.py) against a spare redis-server while events stream in, and
- SIGKILL it and cut its append-only file back to the size it had a second before (what
  the file holds after a crash of the machine: the fsync of the last second never ran),
- or SIGKILL it and restart it without its files,
then require every event counted exactly once, with the worker that kept running and
still held the newer state in its cache.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.partitioner import DefaultPartitioner
from test_store_recovery import (
    Stream,
    Workers,
    counts_in_redis,
    spare_redis,
    wait_for_counts,
    wait_until_stopped,
)

from streams.kafka import TopicSpec, client_options, ensure_topics
from streams.localinfra import LocalRedis
from streams.settings import Settings
from streams.tablestore import RedisStore
from streams.tablestore.backend import PartitionWrite
from streams.tablestore.keys import SEQUENCE_FIELD, entry_key, offsets_key, partition_prefix

__all__ = ["spare_redis"]  # the fixture, used here by name

TABLE = "lost"


def prefix(settings: Settings, partition: int) -> bytes:
    return partition_prefix(settings.redis_key_prefix, settings.app_id, TABLE, partition)


@pytest.fixture
def store(
    settings: Settings, redis_client: redis.Redis, make_store: Callable[..., RedisStore]
) -> RedisStore:
    return make_store(settings, TABLE, 3, settings.redis_url)


def prefix_of(settings: Settings, partition: int) -> bytes:
    """The counting app's table partition."""
    return partition_prefix(settings.redis_key_prefix, settings.app_id, "totals", partition)


def write(settings: Settings, expected: int, value: bytes = b"v") -> PartitionWrite:
    p = prefix(settings, 0)
    return PartitionWrite(p, {entry_key(p, b"k"): value}, {b"tp:events:0": 10}, expected)


async def test_each_flush_counts_one_more_and_a_claim_reads_the_count(
    settings: Settings, redis_client: redis.Redis, store: RedisStore
) -> None:
    backend = store.backend
    [claim] = backend.claim_partitions([prefix(settings, 0)], "w:1")
    assert (claim.previous_owner, claim.sequence) == (None, 0)
    assert (await backend.write_checked([write(settings, 0)], "w:1")).sequences == {
        prefix(settings, 0): 1
    }
    assert (await backend.write_checked([write(settings, 1)], "w:1")).sequences == {
        prefix(settings, 0): 2
    }
    [claim] = backend.claim_partitions([prefix(settings, 0)], "w:2")
    assert (claim.previous_owner, claim.sequence) == (b"w:1", 2)


async def test_a_flush_retried_after_a_lost_reply_is_not_taken_for_a_loss(
    settings: Settings, store: RedisStore
) -> None:
    backend = store.backend
    backend.claim_partitions([prefix(settings, 0)], "w:1")
    assert (await backend.write_checked([write(settings, 0)], "w:1")).sequences
    again = await backend.write_checked([write(settings, 0)], "w:1")  # its reply was lost
    assert again.sequences == {prefix(settings, 0): 1}
    assert not again.lost


async def test_a_count_gone_back_refuses_the_flush_and_writes_nothing(
    settings: Settings, redis_client: redis.Redis, store: RedisStore
) -> None:
    backend = store.backend
    p = prefix(settings, 0)
    backend.claim_partitions([p], "w:1")
    for expected in range(3):
        await backend.write_checked([write(settings, expected, b"old")], "w:1")
    redis_client.hset(offsets_key(p), SEQUENCE_FIELD, 1)  # Redis lost two flushes
    outcome = await backend.write_checked([write(settings, 3, b"new")], "w:1")
    assert outcome.lost == {p: 1}
    assert not outcome.sequences
    assert redis_client.get(entry_key(p, b"k")) == b"old"


async def test_a_redis_emptied_refuses_the_flush_of_a_partition_flushed_before(
    settings: Settings, redis_client: redis.Redis, store: RedisStore
) -> None:
    backend = store.backend
    p = prefix(settings, 0)
    backend.claim_partitions([p], "w:1")
    await backend.write_checked([write(settings, 0)], "w:1")
    redis_client.delete(offsets_key(p), entry_key(p, b"k"))
    outcome = await backend.write_checked([write(settings, 1)], "w:1")
    assert outcome.lost == {p: 0}
    assert redis_client.exists(entry_key(p, b"k")) == 0


# -- the counting app against a Redis that forgets -------------------------------------

PARTITIONS = 3
#: Flush often, so that the second cut off holds several acknowledged flushes.
FLUSH_INTERVAL_S = 0.2


@pytest.fixture
def stream_settings(settings: Settings) -> Settings:
    asyncio.run(ensure_topics(settings, [TopicSpec(settings.topic("events"), PARTITIONS)]))
    return settings


@pytest.fixture
def workers(
    tmp_path: Path, stream_settings: Settings, spare_redis: LocalRedis
) -> Iterator[Workers]:
    store_url = f"redis://{spare_redis.address}/0?flush_interval={FLUSH_INTERVAL_S}"
    made = Workers(stream_settings, store_url, tmp_path)
    yield made
    made.stop_all()


class AofSizes:
    """The size of the append-only file's increment, sampled every 20 ms."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "appendonlydir"
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def incr_file(self) -> Path:
        """The increment file the manifest names (Redis 7: type ``i``, the last one)."""
        manifest = next(self.dir.glob("*.manifest")).read_text().splitlines()
        names = [line.split()[1] for line in manifest if line.split()[-1] == "i"]
        return self.dir / names[-1]

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.samples.append((time.monotonic(), self.incr_file().stat().st_size))
            except (OSError, StopIteration, IndexError):
                continue

    def __enter__(self) -> AofSizes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def size_before(self, moment: float) -> int:
        """The last size sampled at or before ``moment``."""
        return max((t, size) for t, size in self.samples if t <= moment)[1]


async def send_once_keys(stream: Stream, count: int, seconds: float) -> None:
    """Events of keys seen once only, spread over ``seconds``.

    The stream's own keys are hot: each is written again by every flush, so a worker
    writing its cached state back would hide a loss of them. A key written once, in the
    span Redis forgets, is never written again: only a replay brings it back.
    """
    producer = AIOKafkaProducer(enable_idempotence=True, **client_options(stream.settings))
    await producer.start()
    try:
        for _ in range(count):
            stream.sent += 1
            sequence = stream.sent  # the stream's sender numbers its events meanwhile
            key = f"once-{sequence}"
            await producer.send_and_wait(
                stream.topic, key=key.encode(), value=json.dumps(sequence).encode()
            )
            stream.expected[key] = [1, sequence]
            await asyncio.sleep(seconds / count)
    finally:
        await producer.stop()


def sigkill(service: LocalRedis) -> None:
    pid = service.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until_stopped(service)


def all_logs(workers: Workers) -> str:
    return "".join(path.read_text(errors="replace") for path in workers.logs.glob("worker-*"))


def recovery_seconds(logs: str) -> float:
    """From the loss detected to the partitions resumed, by the worker's log times."""

    def moment(marker: str) -> datetime:
        line = next(line for line in logs.splitlines() if marker in line)
        return datetime.strptime(line[line.index("[") + 1 :][:23], "%Y-%m-%d %H:%M:%S,%f")

    return (moment("recovered: resuming") - moment("Redis lost acknowledged")).total_seconds()


def counted_once(
    service: LocalRedis, settings: Settings, stream: Stream, workers: Workers
) -> float:
    """Wait until Redis holds exactly the counts sent; return how long that took."""
    client = redis.Redis(host="127.0.0.1", port=service.ports[0])
    started = time.monotonic()
    try:
        found = wait_for_counts(client, settings, stream.expected, workers)
    finally:
        client.close()
    assert found == stream.expected
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("count", [1, 2], ids=["one-worker", "two-workers"])
def test_redis_losing_its_last_second_is_replayed_exactly(
    stream_settings: Settings, workers: Workers, spare_redis: LocalRedis, count: int
) -> None:
    stream = Stream(stream_settings)
    cut: list[int] = []

    async def crash() -> None:
        sending = asyncio.create_task(stream.send_for(20))
        for _ in range(count):  # two: each detects the loss of its own partitions
            workers.start()
        with AofSizes(spare_redis.data_dir) as sizes:
            await asyncio.sleep(8)
            await send_once_keys(stream, 100, 0.8)  # all of them in the second lost
            await asyncio.sleep(0.1)
            killed_at = time.monotonic()
            await asyncio.to_thread(sigkill, spare_redis)
        incr = sizes.incr_file()
        before, after = incr.stat().st_size, sizes.size_before(killed_at - 1.0)
        os.truncate(incr, after)  # the fsync of the last second never happened
        cut.append(before - after)
        await asyncio.sleep(2)
        spare_redis.start()
        await sending

    asyncio.run(crash())
    assert cut[0] > 0
    took = counted_once(spare_redis, stream_settings, stream, workers)
    logs = all_logs(workers)
    assert "Redis lost acknowledged writes" in logs, workers.log_tail()
    assert all(worker.poll() is None for worker in workers.running), logs
    print(
        f"{stream.sent} events; AOF cut by {cut[0]} bytes; recovered in "
        f"{recovery_seconds(logs):.2f}s; counted exactly {took:.1f}s after the stream ended"
    )


@pytest.mark.slow
def test_redis_restarted_empty_rebuilds_the_state_from_the_log(
    stream_settings: Settings, workers: Workers, spare_redis: LocalRedis
) -> None:
    stream = Stream(stream_settings)

    async def wipe() -> None:
        sending = asyncio.create_task(stream.send_for(20))
        workers.start()
        await asyncio.sleep(6)
        await send_once_keys(stream, 100, 2)  # cached, clean, and then gone from Redis
        await asyncio.sleep(1)
        await asyncio.to_thread(sigkill, spare_redis)
        shutil.rmtree(spare_redis.data_dir)
        spare_redis.data_dir.mkdir()
        await asyncio.sleep(2)
        spare_redis.start()
        await sending

    asyncio.run(wipe())
    took = counted_once(spare_redis, stream_settings, stream, workers)
    logs = all_logs(workers)
    assert "Redis lost acknowledged writes" in logs, workers.log_tail()
    assert "rebuilding its state from the start of the log" in logs, logs
    print(
        f"{stream.sent} events; recovered in {recovery_seconds(logs):.2f}s; "
        f"counted exactly {took:.1f}s after the stream ended"
    )


async def delete_records_before(
    settings: Settings, topic: str, partition: int, offset: int
) -> None:
    """What retention does: the partition's log no longer starts at offset 0."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, partition): RecordsToDelete(offset)})
    finally:
        await admin.close()


def partition_of(key: str) -> int:
    """The partition the producer's default partitioner sends ``key`` to."""
    every = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key.encode(), every, every))


@pytest.mark.slow
def test_redis_restarted_empty_refuses_a_partition_whose_log_lost_events(
    stream_settings: Settings, workers: Workers, spare_redis: LocalRedis
) -> None:
    stream = Stream(stream_settings)

    async def before() -> None:
        workers.start()
        await stream.send_for(6)

    asyncio.run(before())
    # What Redis then loses must be state the worker built: a worker slow to start (a
    # busy machine) would otherwise first read the partition after the wipe, from the
    # log's new start, as any new deployment does.
    counted_once(spare_redis, stream_settings, stream, workers)

    async def wipe() -> None:
        await delete_records_before(stream_settings, stream.topic, 0, 50)
        await asyncio.to_thread(sigkill, spare_redis)
        shutil.rmtree(spare_redis.data_dir)
        spare_redis.data_dir.mkdir()
        spare_redis.start()
        await stream.send_for(4)

    asyncio.run(wipe())
    client = redis.Redis(host="127.0.0.1", port=spare_redis.ports[0])
    rebuilt = {k: v for k, v in stream.expected.items() if partition_of(k) != 0}
    assert rebuilt
    assert len(rebuilt) < len(stream.expected)
    deadline = time.monotonic() + 60
    try:
        while (found := counts_in_redis(client, stream_settings)) != rebuilt:
            assert time.monotonic() < deadline, f"{found} != {rebuilt}\n{workers.log_tail()}"
            time.sleep(0.5)
        marks = client.hgetall(offsets_key(prefix_of(stream_settings, 0)))
    finally:
        client.close()
    refused = f"refused:tp:{stream.topic}:0".encode()
    assert b"earliest offset 50" in marks[refused]
    assert f"tp:{stream.topic}:0".encode() not in marks
    logs = all_logs(workers)
    assert logs.count(f"{stream.topic}[0] refused: Redis lost its state") == 1, logs
    assert all(worker.poll() is None for worker in workers.running)


@pytest.mark.slow
def test_redis_emptied_while_no_worker_runs_is_rebuilt_from_the_log(
    stream_settings: Settings, workers: Workers, spare_redis: LocalRedis
) -> None:
    """The group's committed offsets outlive Redis: a worker must not resume from them."""
    stream = Stream(stream_settings)

    async def before() -> None:
        sending = asyncio.create_task(stream.send_for(4))
        workers.start()
        await sending

    asyncio.run(before())
    counted_once(spare_redis, stream_settings, stream, workers)
    workers.stop_all()  # everything flushed and committed to the group: then Redis forgets
    spare_redis.stop()
    wait_until_stopped(spare_redis)
    shutil.rmtree(spare_redis.data_dir)
    spare_redis.data_dir.mkdir()
    spare_redis.start()

    async def after() -> None:
        workers.start()
        await stream.send_for(3)

    asyncio.run(after())
    counted_once(spare_redis, stream_settings, stream, workers)
    assert "it lost it; rebuilding them from the start of the log" in all_logs(workers)
