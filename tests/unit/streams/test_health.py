"""Liveness and readiness of a worker, computed without its event loop (streams.health)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

from streams.health import LoopHeartbeat, Outages, WorkerHealth
from streams.kafkalog import OutageLog
from streams.metrics import PipelineMetrics
from streams.tablestore import RedisStore
from streams.tablestore.backend import Client, RedisBackend


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def never_connects() -> Client:
    raise AssertionError("no Redis call in these tests")


class Store(RedisStore):
    """A redis:// store as far as the outage reading goes: its backend."""

    def __init__(self) -> None:  # no app, no table: nothing else is read
        self.backend = RedisBackend(never_connects, ttl_ms=1000, description="test")


def kafka_error(log: OutageLog) -> None:
    record = logging.LogRecord(
        "aiokafka", logging.ERROR, "", 0, "Unable to update metadata from %s", (1,), None
    )
    log.filter(record)


def health(
    *,
    silent_s: float = 0.0,
    store: Store | None = None,
    kafka: OutageLog | None = None,
    ready: str | None = None,
) -> WorkerHealth:
    clock = Clock()
    beat = LoopHeartbeat(clock=clock)
    clock.now += silent_s
    outages = Outages(
        [Store() if store is None else store, object()],  # a store is a mapping: "or" counts it
        kafka or OutageLog(),
        wall=lambda: 1_700_000_000.0,
    )
    return WorkerHealth(
        beat,
        outages,
        lambda: ready,
        lambda: {"model_version": "v1"},
        stuck_after_s=60,
        wall=lambda: 1_700_000_000.0,
    )


def test_a_turning_loop_with_answering_dependencies_is_alive_and_ready() -> None:
    checked = health(silent_s=1)
    assert checked.liveness().ok
    verdict = checked.readiness()
    assert verdict.ok
    assert verdict.body == {"status": "ready", "model_version": "v1"}
    assert verdict.page().status == 200


def test_the_pipeline_reason_makes_the_worker_unready() -> None:
    verdict = health(ready="no model promoted yet").readiness()
    assert not verdict.ok
    assert verdict.page().status == 503
    assert json.loads(verdict.page().body)["reason"] == "no model promoted yet"


def test_a_redis_outage_is_unready_with_its_start_but_alive_however_long() -> None:
    store = Store()
    store.backend._backoff.failed(ConnectionError("refused"))
    checked = health(silent_s=600, store=store, ready="no model promoted yet")
    alive = checked.liveness()
    assert alive.ok
    assert alive.body["waiting_on"] == ["redis"]
    reason = checked.readiness().body["reason"]
    assert reason.startswith("redis unavailable since 2023-11-14T22:13:")
    store.backend._backoff.succeeded()
    # Redis back and the loop still silent: now that is the reason.
    assert checked.readiness().body["reason"] == "event loop has not turned for 600 s"
    assert health(store=store, ready="no model promoted yet").readiness().body["reason"] == (
        "no model promoted yet"
    )


def test_a_kafka_outage_is_unready_and_explains_a_silent_loop() -> None:
    kafka = OutageLog(counter=PipelineMetrics().transactions)
    kafka_error(kafka)
    checked = health(silent_s=600, kafka=kafka)
    assert checked.liveness().ok
    assert checked.readiness().body["reason"].startswith("kafka unavailable since ")


def test_a_loop_silent_past_the_limit_without_an_outage_is_stuck() -> None:
    assert health(silent_s=59).liveness().ok
    stuck = health(silent_s=61)
    verdict = stuck.liveness()
    assert not verdict.ok
    assert verdict.page().status == 503
    assert "has not turned for 61 s" in verdict.body["reason"]
    assert stuck.readiness().body["reason"] == "event loop has not turned for 61 s"


def test_the_heartbeat_marks_from_the_loop_and_a_thread_reads_it() -> None:
    beat = LoopHeartbeat(interval_s=0.01)

    async def run() -> float:
        beat.start(asyncio.get_running_loop())
        await asyncio.sleep(0.1)
        fresh = beat.silent_for()
        beat.stop()
        return fresh

    assert asyncio.run(run()) < 0.05
    seen: list[float] = []
    reader = threading.Thread(target=lambda: seen.append(beat.silent_for()))
    time.sleep(0.05)
    reader.start()
    reader.join()
    assert seen[0] >= 0.05


def test_kafka_available_follows_the_process_outage_log(monkeypatch: Any) -> None:
    log = OutageLog(counter=PipelineMetrics().transactions)
    monkeypatch.setattr("streams.metrics.OUTAGE_LOG", log)
    metrics = PipelineMetrics()
    assert metrics.registry.get_sample_value("fraudstream_kafka_available") == 1.0
    kafka_error(log)
    assert metrics.registry.get_sample_value("fraudstream_kafka_available") == 0.0
