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

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from outage_harness import OutagePlan, run_outage, summary
from pipeline_harness import check_outputs, scenario

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
#: Seconds the worker may take to notice Redis is gone.
NOTICE_S = 3.0
OUTAGE_S = 15.0
PLAN = OutagePlan(
    notice_s=NOTICE_S,
    reason="redis unavailable since",
    gauge="fraudstream_redis_available",
    rate=250,  # events per second: about 40 s of stream, the outage in its middle
    scored_before=500,
    scored_timeout_s=90,
    settle_s=2,
    outage_s=OUTAGE_S,
    replay_timeout_s=180,
)


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
    outage = run_outage(
        case, tmp_path, free_port, PLAN, lambda: stop_redis(spare_redis), spare_redis.start
    )
    print(f"\n{summary(outage, 'Redis')}")

    # Through the outage, every transaction has the offline engine's features and alerts.
    check_outputs(case.settings, case.offline, case.version)
