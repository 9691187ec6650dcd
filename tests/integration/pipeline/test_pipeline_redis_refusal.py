"""Redis refusing the worker mid-stream stops it without loss, and says why in one line.

An operator rotates the Redis password (``CONFIG SET requirepass``) and the worker's
connections drop (``CLIENT KILL``): every reconnection is refused. That is not an outage
to wait out: the worker logs one line naming Redis and the refusal and exits 1, writing
nothing more. Restarted once Redis accepts it again, it resumes from its last flush:
every transaction scored, every alert sent, the terminal states exact.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
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
from streams.localinfra import LocalRedis
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
RATE = 200  # events per second: the refusal comes mid-stream
ROTATED = "rotated-password"


@pytest.fixture
def spare_redis(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[LocalRedis]:
    """A redis-server of this test's own: its password changes under the worker."""
    service = LocalRedis(Settings(local_dir=tmp_path / "redis-local", local_redis_port=free_port()))
    service.start()
    yield service
    service.stop()


def test_a_password_rotated_under_the_worker_stops_it_and_a_restart_loses_nothing(
    settings: Settings, tmp_path: Path, free_port: Callable[[], int], spare_redis: LocalRedis
) -> None:
    url = f"redis://{spare_redis.address}/0"
    case = scenario(settings, tmp_path, DATA, alert_share=0.05, redis_url=url, table_store=url)
    transactions, path, offline, version, settings = astuple(case)
    host, port = spare_redis.address.split(":")

    workers = Workers(settings, tmp_path, free_port)
    worker, web_port = workers.start()
    try:
        workers.wait_ready(web_port)
        sender = replay(settings, path, "--rate", str(RATE))
        workers.wait_for_metric(web_port, "fraudstream_transactions_total", 600, 90)
        redis.Redis(host=host, port=int(port)).config_set("requirepass", ROTATED)
        operator = redis.Redis(host=host, port=int(port), password=ROTATED)
        operator.client_kill_filter(_type="normal")
        try:
            code = worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the refused worker went on\n{workers.log()}") from None
        assert code == 1, workers.log()
        log = (tmp_path / "worker-1.log").read_text()  # whole: tracebacks follow the line
        assert f"Redis at {url} refused this worker: AuthenticationError" in log, log
        assert ROTATED not in log
        workers.running = []

        redis.Redis(host=host, port=int(port), password=ROTATED).config_set("requirepass", "")
        output, _ = sender.communicate(timeout=120)
        assert sender.returncode == 0, output.decode()
        _, web_port = workers.start()
        workers.wait_ready(web_port)
        client = redis.Redis(host=host, port=int(port))
        wait_until_applied(settings, client, transactions)
    finally:
        codes = workers.stop_all()
    assert codes == [0], workers.log()
    check_outputs(settings, offline, version)
    assert terminal_mismatches(settings, client, transactions) == []
