"""A worker's /health, /ready and /metrics answer within a second through a Redis outage.

A worker scores a steady replay with its tables on a redis-server of its own; the test
stops that server mid-stream, keeps it down for ``OUTAGE_S`` seconds and starts it
again, while a thread asks the three pages every half second. Every answer comes within
a second; /health stays 200 (an outage is not a hang); /ready is 503 with "redis
unavailable since ..." during the outage and 200 again after it;
``fraudstream_redis_available`` reads 0 during it. After the outage the worker scores
every transaction of the replay, each with the offline engine's features (the scorer
holds what it cannot read final until Redis is back).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple
from pathlib import Path

import pytest
import redis
from pipeline_harness import (
    Answer,
    Poller,
    Workers,
    check_outputs,
    replay,
    sample,
    scenario,
    wait_until_applied,
)

from features.simulator import SimulationConfig
from streams.localinfra.redis import LocalRedis
from streams.settings import Settings

pytestmark = pytest.mark.slow

DATA = SimulationConfig(
    customers=200,
    terminals=400,
    days=24,
    compromised_terminals_per_day=1,
    compromised_customers_per_day=1,
    seed=23,
)
RATE = 250  # events per second: about 40 s of stream, the outage in its middle
OUTAGE_S = 15.0


def redis_available(answer: Answer) -> float | None:
    return sample(answer, "fraudstream_redis_available")


@pytest.fixture
def spare_redis(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[LocalRedis]:
    port = free_port()
    service = LocalRedis(Settings(local_dir=tmp_path / "redis-local", local_redis_port=port))
    service.start()
    yield service
    service.stop()


def stop_redis(service: LocalRedis) -> None:
    pid = service.status().pid
    assert pid is not None
    os.kill(pid, 15)  # SIGTERM: redis-server saves, as a restarted production server would
    while service.status().pid is not None:
        time.sleep(0.05)


def test_pages_answer_through_a_redis_outage_and_the_worker_scores_everything(
    settings: Settings,
    tmp_path: Path,
    free_port: Callable[[], int],
    spare_redis: LocalRedis,
) -> None:
    redis_url = f"redis://{spare_redis.address}/0"
    case = scenario(
        settings, tmp_path, DATA, alert_share=0.05, redis_url=redis_url, table_store=redis_url
    )
    transactions, path, offline, version, settings = astuple(case)
    client = redis.Redis.from_url(redis_url)

    workers = Workers(settings, tmp_path, free_port)
    _, port = workers.start()
    try:
        workers.wait_ready(port)
        sender = replay(settings, path, "--rate", str(RATE))
        workers.wait_for_metric(port, "fraudstream_transactions_total", 500, 90)
        with Poller(port) as poller:
            time.sleep(2)
            assert sender.poll() is None, "the replay ended before the outage: slow it down"
            down_at = time.monotonic()
            stop_redis(spare_redis)
            time.sleep(OUTAGE_S)
            up_at = time.monotonic()
            spare_redis.start()
            deadline = time.monotonic() + 60
            while not any(a.status == 200 for a in poller.of("/ready", start=up_at)):
                assert time.monotonic() < deadline, "/ready never turned 200 after the outage"
                time.sleep(0.5)
            time.sleep(2)
        output, _ = sender.communicate(timeout=180)
        assert sender.returncode == 0, output.decode()
        wait_until_applied(settings, client, transactions)
    finally:
        codes = workers.stop_all()
        client.close()
    assert codes == [0], workers.log()

    # Every page answered every time, within a second, outage or not.
    slow = [a for a in poller.answers if a.status is None or a.seconds >= 1.0]
    assert slow == [], slow[:5]
    assert all(a.status == 200 for a in poller.of("/health")), workers.log()
    assert all(a.status == 200 for a in poller.of("/metrics"))

    # /ready: 503 with the reason from shortly after the stop until Redis is back.
    during = poller.of("/ready", start=down_at + 3, end=up_at)
    assert during
    assert all(a.status == 503 for a in during), during
    assert all("redis unavailable since" in json.loads(a.body)["reason"] for a in during)
    assert {redis_available(a) for a in poller.of("/metrics", down_at + 3, up_at)} == {0.0}
    unready = [a for a in poller.of("/ready") if a.status == 503]
    first_ok_after = min(a.at for a in poller.of("/ready", start=up_at) if a.status == 200)
    assert redis_available(poller.of("/metrics", start=first_ok_after)[-1]) == 1.0

    times = [a.seconds for a in poller.answers]
    print(
        f"\n{len(poller.answers)} answers during a {OUTAGE_S:.0f} s outage: slowest "
        f"{max(times) * 1000:.1f} ms, median {sorted(times)[len(times) // 2] * 1000:.1f} ms; "
        f"/ready 503 from {min(a.at for a in unready) - down_at:+.1f} s to "
        f"{max(a.at for a in unready) - down_at:+.1f} s after the stop; 200 again "
        f"{first_ok_after - up_at:.1f} s after the restart; max event loop silence "
        f"{max(json.loads(a.body)['event_loop_silent_s'] for a in poller.of('/health')):.1f} s"
    )

    # Through the outage, every transaction has the offline engine's features and alerts.
    check_outputs(settings, offline, version)
