"""`fraudstream worker` and `fraudstream demo` as a user runs them, in child processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import pytest

from streams.settings import Settings


def cli_env(settings: Settings, web_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "FRAUDSTREAM_APP_ID": settings.app_id,
        "FRAUDSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "FRAUDSTREAM_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "FRAUDSTREAM_WEB_PORT": str(web_port),
    }


def listening(pid: int) -> set[str]:
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={pid}," in line}


def test_worker_serves_on_loopback_and_stops_on_sigterm(
    settings: Settings, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams", "--log-level", "warn", "worker"],
            env=cli_env(settings, port),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "worker web server never answered"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except (URLError, OSError):
                time.sleep(0.3)
        addresses = listening(worker.pid)
        assert f"127.0.0.1:{port}" in addresses
        assert all(a.startswith("127.0.0.1:") for a in addresses), addresses
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            pytest.fail(f"worker ignored SIGTERM for 60 s:\n{log.read_text()[-6000:]}")
    assert code == 0, log.read_text()[-6000:]


def test_worker_refuses_an_unreachable_broker_with_one_line(
    settings: Settings, free_port: Callable[[], int]
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "--bootstrap-servers",
            f"127.0.0.1:{free_port()}",
            "worker",
        ],
        env=cli_env(settings, free_port()),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "no Kafka broker answers at 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_end_to_end(
    settings: Settings, free_port: Callable[[], int], tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams", "demo", "--test-seconds", "10"],
        env={
            **cli_env(settings, free_port()),
            "FRAUDSTREAM_MODEL_REGISTRY_DIR": str(tmp_path / "registry"),
            "FRAUDSTREAM_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        },
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # The run's own topics, under the configured prefix (streams.demorun).
    run_prefix = re.escape(f"{settings.topic_prefix}demo-")
    assert re.search(rf"prefix '{run_prefix}[0-9a-f]{{8}}-', 3 partitions each", out), out
    assert "promoted " in out
    assert "the worker scored " in out
    summary = re.search(r"(\d[\d,]*) alerts on ([\d,]+) transactions", out)
    assert summary, out
    alerts = int(summary.group(1).replace(",", ""))
    assert alerts > 0
    # Live alerts are those of the same model offline: the demo says so in numbers.
    offline = re.search(r"alerts on ([\d,]+); ([\d,]+) of them alerted live too", out)
    assert offline, out
    assert offline.group(1) == offline.group(2) == summary.group(1)
    assert re.search(r"latency p50 \d+ ms", out)
    assert "worker stopped" in out
    assert re.search(r"deleted this run's \d+ topics and \d+ Redis keys", out), out
    assert "demo done" in out
