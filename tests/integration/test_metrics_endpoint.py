"""The worker's pages on its real web server (a ThreadingHTTPServer on a TCP port).

Only the pipeline's web server is started, not Faust, Kafka consumers or agents: the
pages do not depend on them. The test blocks an event loop on purpose to show that the
pages never wait for it.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from urllib.error import HTTPError

import pytest

from streams.app import create_app
from streams.pipeline import Pipeline, build_pipeline
from streams.settings import Settings


def get(url: str, method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except HTTPError as error:
        body = error.read().decode()
        error.close()
        return error.code, error.headers["Content-Type"], body


@pytest.fixture
def pipeline(
    settings: Settings, free_port: Callable[[], int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    local = settings.model_copy(
        update={
            "web_port": free_port(),
            "table_store": "memory://",
            "local_dir": tmp_path_factory.mktemp("local"),
        }
    )
    built = build_pipeline(create_app(local), local)
    built.web.start()
    yield built
    built.web.stop()


def test_worker_serves_metrics_health_and_readiness(pipeline: Pipeline) -> None:
    base = f"http://127.0.0.1:{pipeline.web.port}"
    pipeline.metrics.transactions.inc(42)
    pipeline.metrics.set_model_version("v7")

    status, content_type, body = get(f"{base}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert "version=" in content_type
    assert "fraudstream_transactions_total 42.0" in body
    assert 'fraudstream_model_info{version="v7"} 1.0' in body
    assert "fraudstream_kafka_available 1.0" in body
    assert "process_resident_memory_bytes" in body
    # Rendered per request, not cached.
    pipeline.metrics.transactions.inc()
    assert "fraudstream_transactions_total 43.0" in get(f"{base}/metrics")[2]

    status, content_type, body = get(f"{base}/health")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body)["status"] == "ok"
    status, _, body = get(f"{base}/ready")
    assert status == 503
    assert json.loads(body)["reason"] == "no model promoted yet"


def test_faust_table_views_and_other_paths_are_not_served(pipeline: Pipeline) -> None:
    base = f"http://127.0.0.1:{pipeline.web.port}"
    for path in ("/table/customer_windows/C539/", "/router/", "/metricsx", "/"):
        assert get(f"{base}{path}")[0] == 404, path
    assert get(f"{base}/metrics", method="POST")[0] == 405
    assert pipeline.app.conf.web_enabled is False
    assert pipeline.app.conf.web_tables_enabled is False


def test_pages_answer_while_the_event_loop_is_held(pipeline: Pipeline) -> None:
    """What a synchronous store call waiting on Redis does to the loop, for 2 s."""
    base = f"http://127.0.0.1:{pipeline.web.port}"

    async def hold_the_loop() -> list[float]:
        pipeline.heartbeat.start(asyncio.get_running_loop())
        await asyncio.sleep(0.1)
        answered: list[float] = []

        def probe() -> None:
            for path in ("/health", "/ready", "/metrics"):
                started = time.monotonic()
                get(f"{base}{path}")
                answered.append(time.monotonic() - started)

        prober = asyncio.get_running_loop().run_in_executor(None, probe)
        time.sleep(2)  # noqa: ASYNC251 (the point: the loop is held)
        await prober
        pipeline.heartbeat.stop()
        return answered

    answered = asyncio.run(hold_the_loop())
    assert len(answered) == 3
    assert max(answered) < 0.5, answered
