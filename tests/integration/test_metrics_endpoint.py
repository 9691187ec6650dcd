"""GET /metrics on the worker's real Faust web server (aiohttp on a TCP port).

Only the app's web service is started (``app.web``, the service a worker starts for its
web server), not Kafka consumers or agents: the page does not depend on them, and the
test stays well under a second.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from urllib.error import HTTPError

import pytest

from streams.app import create_app
from streams.metrics import PipelineMetrics, install_metrics_view
from streams.settings import Settings


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


async def test_worker_web_server_serves_metrics(
    settings: Settings, free_port: Callable[[], int]
) -> None:
    port = free_port()
    app = create_app(settings, web_port=port)
    metrics = PipelineMetrics()
    install_metrics_view(app, metrics)
    metrics.transactions.inc(42)
    metrics.set_model_version("v7")

    await app.web.start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        # urllib blocks: run it off the loop that serves the request.
        status, content_type, body = await asyncio.to_thread(get, url)
        assert status == 200
        assert content_type.startswith("text/plain")
        assert "version=" in content_type
        assert "fraudstream_transactions_total 42.0" in body
        assert 'fraudstream_model_info{version="v7"} 1.0' in body
        assert "process_resident_memory_bytes" in body

        # Rendered per request, not cached at install time.
        metrics.transactions.inc()
        _, _, body = await asyncio.to_thread(get, url)
        assert "fraudstream_transactions_total 43.0" in body

        # Only GET /metrics is ours: other paths still 404.
        with pytest.raises(HTTPError) as missing:
            await asyncio.to_thread(get, f"http://127.0.0.1:{port}/metricsx")
        assert missing.value.code == 404
        missing.value.close()
    finally:
        await app.web.stop()
