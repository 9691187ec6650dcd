"""A spare one-node broker for tests that kill one: the shared local broker must stay up."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streams.localinfra import LocalKafka
from streams.settings import Settings


@contextmanager
def spare_broker(
    base_settings: Settings, directory: Path, free_port: Callable[[], int]
) -> Iterator[LocalKafka]:
    """A KRaft broker on free ports under ``directory``, sharing the local broker's jars."""
    jars = LocalKafka(base_settings).lib_dir
    if not (jars / ".complete").exists():
        pytest.fail(f"no Kafka jars in {jars}: run `fraudstream infra up` before the tests")
    made = LocalKafka(
        Settings(
            local_dir=directory,
            local_kafka_port=free_port(),
            local_kafka_controller_port=free_port(),
            local_kafka_heap="256m",
        )
    )
    made.lib_dir.parent.mkdir(parents=True)
    made.lib_dir.symlink_to(jars, target_is_directory=True)
    made.start()
    try:
        yield made
    finally:
        made.stop()


def kill_broker(broker: LocalKafka) -> None:
    """SIGKILL the broker's process group (no controlled shutdown, as a crashed host)."""
    pid = broker.process.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    while broker.process.pid() is not None:
        time.sleep(0.05)
