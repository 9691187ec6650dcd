"""deploy/local for real: start twice, kill by hand, status, stop — on spare ports.

These tests run their own Kafka broker and redis-server in a temporary local_dir with free
ports, so the session's shared services are never disturbed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.localinfra import LocalKafka, LocalRedis, LocalService, ServiceError
from streams.settings import Settings


def listening_addresses(pid: int) -> set[str]:
    """Local addresses the process (and its threads) listen on, from `ss`."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={pid}," in line}


@pytest.fixture
def spare_settings(tmp_path: Path, free_port: Callable[[], int]) -> Settings:
    return Settings(
        local_dir=tmp_path / "local",
        local_kafka_port=free_port(),
        local_kafka_controller_port=free_port(),
        local_redis_port=free_port(),
        local_kafka_heap="256m",
    )


@pytest.fixture(params=["redis", "kafka"])
def service(request: pytest.FixtureRequest, spare_settings: Settings) -> Iterator[LocalService]:
    made: LocalService = (
        LocalRedis(spare_settings) if request.param == "redis" else LocalKafka(spare_settings)
    )
    yield made
    made.stop()


def test_start_is_idempotent_and_binds_loopback_only(service: LocalService) -> None:
    assert service.start().endswith(f"started at {service.address}")
    first = service.status()
    assert first.healthy

    assert "already running" in service.start()
    assert service.status().pid == first.pid

    assert first.pid is not None
    addresses = listening_addresses(first.pid)
    assert addresses, "the service listens nowhere"
    assert all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in addresses), addresses


def test_status_tells_the_truth_after_a_kill_and_start_recovers(service: LocalService) -> None:
    service.start()
    pid = service.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while service.status().pid is not None and time.monotonic() < deadline:
        time.sleep(0.1)

    dead = service.status()
    assert dead.pid is None
    assert not dead.answering
    assert str(dead) == f"{service.name}: stopped"

    assert "started" in service.start()  # same data directory, restarted cleanly
    assert service.status().healthy


def test_stop_leaves_no_process_behind(service: LocalService) -> None:
    service.start()
    pid = service.status().pid
    assert pid is not None
    assert service.stop() == f"{service.name} stopped"
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert service.status().pid is None
    assert service.stop() == f"{service.name} was not running"


def test_a_foreign_listener_on_the_port_is_reported(spare_settings: Settings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", spare_settings.local_redis_port))
        squatter.listen()
        service = LocalRedis(spare_settings)
        with pytest.raises(ServiceError, match=r"port \d+ is taken by another process"):
            service.start()
