"""create_app: worker consumers fetch with Settings.fetch_max_wait_ms and fetch_min_bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams.app import create_app
from streams.settings import Settings


@pytest.mark.parametrize(("wait_ms", "min_bytes"), [(25, 1), (400, 65_536)])
async def test_the_worker_consumer_uses_the_settings_fetch_limits(
    tmp_path: Path, wait_ms: int, min_bytes: int
) -> None:
    settings = Settings(local_dir=tmp_path, app_id="fetch-wait", fetch_max_wait_ms=wait_ms)
    settings = settings.model_copy(update={"fetch_min_bytes": min_bytes})
    app = create_app(settings)
    thread = app.consumer._thread  # type: ignore[attr-defined]
    assert isinstance(thread, AIOKafkaConsumerThread)
    try:
        consumer = thread._create_worker_consumer(app.transport)  # type: ignore[arg-type]
        try:
            assert consumer._fetch_max_wait_ms == wait_ms  # Faust's own would be 1500
            assert consumer._fetch_min_bytes == min_bytes  # aiokafka's own would be 1
        finally:
            await consumer.stop()
    finally:
        thread.thread_loop.close()  # made with the (never started) consumer thread


def test_the_default_is_short_and_the_wrapper_is_installed_once(tmp_path: Path) -> None:
    assert Settings().fetch_max_wait_ms <= 10  # what a quiet stream's record waits at most
    create_app(Settings(local_dir=tmp_path, app_id="fetch-wait-1"))
    wrapper = AIOKafkaConsumerThread._create_worker_consumer
    create_app(Settings(local_dir=tmp_path, app_id="fetch-wait-2"))
    assert AIOKafkaConsumerThread._create_worker_consumer is wrapper
