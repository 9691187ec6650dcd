"""`streams.crashexit`: a crashed or stopped worker that does not exit is ended."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pytest

from streams.crashexit import exit_when_stuck


@dataclass
class Worker:
    crashed: bool = False
    should_stop: bool = False


def test_a_running_worker_is_left_alone() -> None:
    exits: list[int] = []
    exit_when_stuck(
        Worker(), after_s=0.01, stop_after_s=0.01, poll_s=0.01, exit_process=exits.append
    )
    time.sleep(0.2)
    assert exits == []


@pytest.mark.parametrize(
    ("event", "said"),
    [
        ("crashed", "the worker crashed and had not stopped"),
        ("should_stop", "the worker was asked to stop and had not exited"),
    ],
)
def test_a_worker_crashed_or_asked_to_stop_and_still_alive_is_ended_with_1(
    caplog: pytest.LogCaptureFixture, event: str, said: str
) -> None:
    worker = Worker()
    exits: list[int] = []
    with caplog.at_level(logging.CRITICAL, logger="streams.crashexit"):
        thread = exit_when_stuck(
            worker, after_s=0.1, stop_after_s=0.1, poll_s=0.01, exit_process=exits.append
        )
        time.sleep(0.05)
        assert exits == []
        setattr(worker, event, True)
        thread.join(timeout=5)
    assert exits == [1]
    assert said in caplog.text
    assert thread.daemon  # never what keeps the process alive
    # Where each thread is, for the operator who reads why.
    assert "thread 'MainThread' (non-daemon):" in caplog.text
    assert "thread 'crash-exit' (daemon):" in caplog.text
    assert "in thread_stacks" in caplog.text


def test_a_crash_during_a_stop_keeps_the_crash_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exits: list[int] = []
    with caplog.at_level(logging.CRITICAL, logger="streams.crashexit"):
        thread = exit_when_stuck(
            Worker(crashed=True, should_stop=True),
            after_s=0.05,
            stop_after_s=30,
            poll_s=0.01,
            exit_process=exits.append,
        )
        thread.join(timeout=5)
    assert exits == [1]
    assert "the worker crashed and had not stopped" in caplog.text
