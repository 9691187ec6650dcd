"""An output Kafka refuses for good stops the worker before its events count as applied.

Mid-stream, an operator sets the alerts topic's ``max.message.bytes`` below an alert's
size: the broker refuses every alert batch from then on, with an error no retry cures.
The worker must not write to Redis the offsets of the transactions whose alerts were
refused (they would never be sent again), must say which topic refused what, and must
stop with its failure exit so that its supervisor restarts it. Once the topic is fixed,
a restarted worker sends every alert: nothing is lost, the scores are at least once.
Before ``streams.delivery``, the worker scored on, and the refused alerts were lost
with only asyncio's "Future exception was never retrieved" in its log.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path

import pytest
import redis
from pipeline_harness import Workers, check_outputs, replay, scenario, wait_until_applied
from topic_configs import set_topic_configs, topic_configs

from features.simulator import SimulationConfig
from streams.delivery import EXIT_UNDELIVERED
from streams.settings import Settings

pytestmark = pytest.mark.slow

DATA = SimulationConfig(
    customers=100,
    terminals=200,
    days=12,
    compromised_terminals_per_day=1,
    compromised_customers_per_day=1,
    seed=17,
)
#: Smaller than any alert record batch (an alert is about 700 bytes of JSON).
TOO_SMALL = "300"
RATE = 300  # events per second: the refusal starts after the worker has flushed


def test_refused_alerts_stop_the_worker_uncommitted_and_a_restart_sends_them(
    settings: Settings,
    tmp_path: Path,
    free_port: Callable[[], int],
    redis_client: redis.Redis,
) -> None:
    case = scenario(settings, tmp_path, DATA, alert_share=0.05)
    transactions, path, offline, version, settings = astuple(case)
    alerts = settings.topic_names["alerts"]
    own = asyncio.run(topic_configs(settings, alerts, own=True))

    workers = Workers(settings, tmp_path, free_port)
    worker, port = workers.start()
    try:
        workers.wait_ready(port)
        sender = replay(settings, path, "--rate", str(RATE))
        workers.wait_for_metric(port, "fraudstream_transactions_total", 600, 90)
        refusing = {**own, "max.message.bytes": TOO_SMALL}
        asyncio.run(set_topic_configs(settings, alerts, refusing))
        try:
            code = worker.wait(timeout=90)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the worker went on while its alerts were refused\n{workers.log()}"
            ) from None
        assert code == EXIT_UNDELIVERED, workers.log()
        log = workers.log()
        assert f"could not deliver an output: Kafka refused an output to {alerts}[" in log, log
        assert "MessageSizeTooLargeError" in log, log
        assert "Future exception was never retrieved" not in log, log
        workers.running = []
        output, _ = sender.communicate(timeout=120)
        assert sender.returncode == 0, output.decode()

        asyncio.run(set_topic_configs(settings, alerts, own))
        _, port = workers.start()
        workers.wait_ready(port)
        wait_until_applied(settings, redis_client, transactions)
    finally:
        codes = workers.stop_all()
        asyncio.run(set_topic_configs(settings, alerts, own))
    assert codes == [0], workers.log()
    check_outputs(settings, offline, version)
