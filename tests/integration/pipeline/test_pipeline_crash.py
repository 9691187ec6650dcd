"""A worker SIGKILLed mid-stream and restarted loses no alert and counts nothing twice.

The replay runs at a steady pace while the worker is killed twice at random moments and
restarted each time. At-least-once for outputs: every transaction has a score record and
every transaction that scored at or above the threshold has its alert (a replayed one
carries the same alert_id). Exactly-once for state: every score record holds the
customer features of the offline engine, and the terminal states left in Redis hold each
terminal's transactions exactly once, with the replayed forwards skipped.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path

import pytest
import redis
from pipeline_harness import (
    Workers,
    check_outputs,
    replay,
    scenario,
    terminal_mismatches,
    wait_until_applied,
)

from features.simulator import SimulationConfig
from streams.settings import Settings

pytestmark = pytest.mark.slow

DATA = SimulationConfig(
    customers=200,
    terminals=400,
    days=24,
    compromised_terminals_per_day=1,
    compromised_customers_per_day=1,
    seed=11,
)
#: Events per second: about 40 s of stream. Both kills must land before it ends, and the
#: second waits for a restarted worker, which takes 10 s or more to start when another
#: test shares the machine (at 400 the stream ended first with two tests at a time).
RATE = 250


def test_sigkilled_workers_lose_no_alert_and_count_nothing_twice(
    settings: Settings,
    tmp_path: Path,
    free_port: Callable[[], int],
    redis_client: redis.Redis,
) -> None:
    case = scenario(
        settings,
        tmp_path,
        DATA,
        alert_share=0.05,
        # A killed worker's partitions move after 6 s, the broker's minimum.
        kafka_session_timeout_s=6.0,
        kafka_heartbeat_interval_s=1.0,
    )
    transactions, path, offline, version, settings = astuple(case)
    rng = random.Random(5)

    workers = Workers(settings, tmp_path, free_port)
    worker, port = workers.start()
    try:
        workers.wait_ready(port)
        sender = replay(settings, path, "--rate", str(RATE))
        for _ in range(2):
            # Kill a worker that is scoring, at a random point of its stream.
            processed = rng.randint(300, 1500)
            workers.wait_for_metric(port, "fraudstream_transactions_total", processed, 90)
            assert sender.poll() is None, "the replay ended before the kill: slow it down"
            workers.kill(worker)
            worker, port = workers.start()
        output, _ = sender.communicate(timeout=120)
        assert sender.returncode == 0, output.decode()
        wait_until_applied(settings, redis_client, transactions)
    finally:
        codes = workers.stop_all()
    assert codes == [0], workers.log()
    replayed = check_outputs(settings, offline, version)

    # State: each terminal's transactions in Redis exactly once (still true after stop).
    assert terminal_mismatches(settings, redis_client, transactions) == []
    # The kills must have made the worker process some events again (else nothing was
    # tested): replayed scores are the visible trace of it.
    assert replayed > 0, "no event was processed twice: the kills hit no unflushed state"
