"""Partitions that move with a backlog and no offset anywhere are read from their start.

Two counting workers (tests/integration/tablestore/counting_app.py) share six partitions.
One of them is frozen (SIGSTOP) before any input exists, so its partitions never get an
offset, neither in Redis nor in the consumer group; the input is produced, the frozen
worker is SIGKILLed, and the other takes its partitions over once the session timeout
has passed. Those partitions must be consumed from their earliest retained offset: every
event counted exactly once in Redis. The second test kills the new owner before its first
flush, so the third worker must not trust where the group's commits have got to either.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from test_store_recovery import Stream, Workers, committed_offsets, wait_for_counts

from streams.kafka import TopicSpec, ensure_topics
from streams.settings import Settings

PARTITIONS = 6


@pytest.fixture
def six_partitions(settings: Settings) -> Settings:
    asyncio.run(ensure_topics(settings, [TopicSpec(settings.topic("events"), PARTITIONS)]))
    return settings


@pytest.fixture
def workers(
    six_partitions: Settings, tmp_path: Path, redis_client: redis.Redis
) -> Iterator[Workers]:
    # Depends on redis_client so that workers stop (and flush) before its keys are deleted.
    made = Workers(six_partitions, six_partitions.redis_url, tmp_path, partitions=PARTITIONS)
    made.env["FRAUDSTREAM_LOG_LEVEL"] = "info"  # "Worker ready" tells when a rebalance ended
    yield made
    for worker in made.running:
        worker.send_signal(signal.SIGCONT)
    made.stop_all()


def ready_count(workers: Workers, number: int) -> int:
    """How many rebalances the ``number``-th worker started has completed."""
    path = workers.logs / f"worker-{number}.log"
    return path.read_text(errors="replace").count("Worker ready") if path.exists() else 0


def wait_until(condition: object, workers: Workers, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, workers.log_tail()
        time.sleep(0.1)


def start_two_sharing_workers(workers: Workers) -> tuple[subprocess.Popen[bytes], int]:
    """Two workers with three partitions each; returns the first and its number."""
    first = workers.start()
    wait_until(lambda: ready_count(workers, 1) >= 1, workers)
    workers.start()
    # The newcomer's join makes the first one rebalance too: both end it ready.
    wait_until(lambda: ready_count(workers, 2) >= 1 and ready_count(workers, 1) >= 2, workers)
    return first, 1


def freeze_send_kill(workers: Workers, stream: Stream, frozen: subprocess.Popen[bytes]) -> float:
    """Freeze ``frozen``, produce the input, kill it; returns when it was killed."""
    frozen.send_signal(signal.SIGSTOP)
    asyncio.run(stream.send_for(4))
    workers.kill(frozen)
    return time.monotonic()


@pytest.mark.slow
def test_partitions_never_committed_are_taken_over_from_their_start(
    six_partitions: Settings, workers: Workers, redis_client: redis.Redis
) -> None:
    stream = Stream(six_partitions)
    first, _ = start_two_sharing_workers(workers)
    killed_at = freeze_send_kill(workers, stream, first)

    found = wait_for_counts(
        redis_client, six_partitions, stream.expected, workers, partitions=PARTITIONS
    )
    recovered_s = time.monotonic() - killed_at
    assert found == stream.expected
    # Enough events in 4 s to fill every partition (a loaded CI machine sent 4,950).
    assert stream.sent >= 4_000
    print(f"{stream.sent} events, all counted once, {recovered_s:.1f} s after the kill")


@pytest.mark.slow
def test_a_takeover_owner_killed_before_its_first_flush_loses_nothing(
    six_partitions: Settings, workers: Workers, redis_client: redis.Redis
) -> None:
    """The new owner commits to the group often and never flushes to Redis, then dies."""
    stream = Stream(six_partitions)
    workers.env["COUNTING_APP_COMMIT_INTERVAL_S"] = "0.2"
    workers.env["FRAUDSTREAM_TABLE_STORE"] = f"{six_partitions.redis_url}?flush_interval=120"
    first, _ = start_two_sharing_workers(workers)
    second = workers.running[1]
    freeze_send_kill(workers, stream, first)

    # The survivor takes the frozen worker's partitions over and commits everything to
    # the group, but flushes nothing of them to Redis: then it dies too.
    def all_committed() -> bool:
        return sum(asyncio.run(committed_offsets(six_partitions)).values()) >= stream.sent

    wait_until(all_committed, workers, timeout_s=60)
    workers.kill(second)

    workers.env["COUNTING_APP_COMMIT_INTERVAL_S"] = "2.8"
    workers.env["FRAUDSTREAM_TABLE_STORE"] = six_partitions.redis_url
    workers.start()
    found = wait_for_counts(
        redis_client, six_partitions, stream.expected, workers, partitions=PARTITIONS
    )
    assert found == stream.expected
