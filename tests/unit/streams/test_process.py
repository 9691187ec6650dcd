"""ManagedProcess: the pid file tells the truth only while our process lives."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from streams.localinfra.process import ManagedProcess, ServiceError, wait_until


def sleeper(tmp_path: Path) -> ManagedProcess:
    return ManagedProcess(
        name="sleeper", pid_file=tmp_path / "s.pid", log_file=tmp_path / "s.log", marker="sleep"
    )


def sleep_argv() -> list[str]:
    sleep = shutil.which("sleep")
    assert sleep is not None
    return [sleep, "300"]


def test_start_writes_a_pid_file_and_stop_ends_the_process(tmp_path: Path) -> None:
    process = sleeper(tmp_path)
    pid = process.start(sleep_argv())
    assert process.pid() == pid
    assert process.pid_file.read_text().strip() == str(pid)
    assert process.stop(timeout_s=5)
    assert process.pid() is None
    assert not process.pid_file.exists()
    assert not process.stop()


def test_a_process_killed_by_hand_is_not_reported_running(tmp_path: Path) -> None:
    process = sleeper(tmp_path)
    pid = process.start(sleep_argv())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: process.pid() is None, timeout_s=5, alive=lambda: True, what="sleeper")
    assert not process.pid_file.exists()


def test_a_reused_pid_is_not_mistaken_for_ours(tmp_path: Path) -> None:
    process = ManagedProcess(
        name="x", pid_file=tmp_path / "x.pid", log_file=tmp_path / "x.log", marker="kafka.Kafka"
    )
    process.pid_file.write_text(f"{os.getpid()}\n")  # alive, but it is pytest, not Kafka
    assert process.pid() is None


def test_wait_until_fails_early_when_the_process_died(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ServiceError, match="ghost exited during start-up"):
        wait_until(lambda: False, timeout_s=30, alive=lambda: False, what="ghost")
    assert time.monotonic() - started < 5
