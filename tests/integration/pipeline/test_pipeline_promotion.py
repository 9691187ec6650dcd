"""Promotions reach real workers through one path, and a bad one never stops scoring.

(1) The newest promoted version no longer loads (its artifact changed after the
promotion): a worker started then scores with the newest earlier promotion, is ready,
and says so in ``/ready`` and ``fraudstream_model_fallback``; every failed load is
counted, retries included; once the artifact is repaired the worker swaps to it by
itself; a running worker keeps its model on another bad promotion, and leaves the
fallback on a good one. (2) ``fraudstream train --promote`` publishes like ``model
promote``: the running worker swaps to the new version, ``model list`` marks it, and a
restarted worker runs it too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pipeline_harness import Workers, read_topic, register_model
from test_pipeline_models import produce, transactions

from features.offline import compute_features
from features.simulator import SimulationConfig, simulate, write_dataset
from models.registry import ModelRegistry, Promotion
from streams.contracts import DecodeError, decode_score
from streams.kafka import ensure_topics, product_topics
from streams.modelcontrol import publish_promotion
from streams.promotion import promote
from streams.settings import Settings

pytestmark = pytest.mark.slow

UNKNOWN = "20240101T000000Z-lr-00000000"
#: How often the workers retry a refused version here (60 s by default).
RETRY_S = 0.5


@pytest.fixture
def control(settings: Settings, tmp_path: Path) -> Settings:
    """Settings with declared topics and a registry of their own."""
    settings = settings.model_copy(update={"model_registry_dir": tmp_path / "registry"})
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    return settings


@pytest.fixture(scope="module")
def small() -> pl.DataFrame:
    return compute_features(simulate(SimulationConfig(customers=50, terminals=100, days=20)))


def ready(port: int) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a worker's /ready."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_ready(workers: Workers, port: int, timeout_s: float = 60) -> dict[str, Any]:
    """Wait until /ready answers 200; its body."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = ready(port)
        if status == 200:
            return body
        assert time.monotonic() < deadline, f"{body}\n{workers.log()}"
        time.sleep(0.3)


def series(port: int, name: str) -> dict[str, float]:
    """The samples of one metric family of a worker, keyed by their label text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{name}(\{{[^}}]*\}})? (\S+)$")
    return {
        match[1] or "": float(match[2])
        for match in map(pattern.match, text.splitlines())
        if match is not None
    }


def versions_scored(settings: Settings, prefix: str, count: int) -> set[str]:
    """The model versions of the score records of transactions ``prefix``0.. ``count``-1."""
    wanted = {f"{prefix}{i}" for i in range(count)}

    def versions(messages: list[Any]) -> dict[str, str]:
        out = {}
        for message in messages:
            record = decode_score(message.value)
            assert not isinstance(record, DecodeError)
            if record.tx_id in wanted:
                out[record.tx_id] = record.model_version
        return out

    scores = read_topic(
        settings,
        settings.topic_names["scores"],
        until=lambda m: len(versions(m)) == count,
        timeout_s=30,
    )
    return set(versions(scores).values())


def corrupt(registry_dir: Path, version: str) -> None:
    """Change an artifact after its promotion: its sha256 no longer matches."""
    artifact = registry_dir / "versions" / version / "model.skops"
    artifact.write_bytes(artifact.read_bytes()[:-16])


def test_a_worker_started_after_a_bad_promotion_scores_with_the_last_good_model(
    control: Settings, tmp_path: Path, free_port: Callable[[], int], small: pl.DataFrame
) -> None:
    registry_dir = control.model_registry_dir
    good = register_model(registry_dir, small, alert_share=0.05, promote=False)
    promote(control, good)
    bad = register_model(registry_dir, small, alert_share=0.2, promote=False)
    promote(control, bad)  # it loaded then; its artifact is damaged afterwards
    artifact = registry_dir / "versions" / bad / "model.skops"
    intact = artifact.read_bytes()
    corrupt(registry_dir, bad)
    workers = Workers(
        control.model_copy(update={"model_retry_interval_s": RETRY_S}), tmp_path, free_port
    )
    _, port = workers.start()
    try:
        workers.wait_ready(port)
        body = wait_ready(workers, port)
        assert body["model_version"] == good
        fallback = body["model_fallback"]
        assert fallback["active_version"] == good
        assert fallback["refused_version"] == bad
        assert "modified after registration" in fallback["reason"]
        assert series(port, "fraudstream_model_fallback") == {f'{{refused_version="{bad}"}}': 1}
        assert series(port, "fraudstream_model_swaps_total") == {"": 0}  # the first is none
        produce(control, transactions("a", 10))
        assert versions_scored(control, "a", 10) == {good}
        # The worker tries the refused version again on its timer, each failure counted.
        workers.wait_for_metric(port, "fraudstream_model_load_failures_total", 2, timeout_s=10)
        assert series(port, "fraudstream_model_swaps_total") == {"": 0}

        # The artifact is repaired in the registry: the worker swaps to it by itself.
        artifact.write_bytes(intact)
        workers.wait_for_metric(port, "fraudstream_model_swaps_total", 1, timeout_s=10 * RETRY_S)
        status, body = ready(port)
        assert (status, body) == (200, {"status": "ready", "model_version": bad})
        assert series(port, "fraudstream_model_fallback") == {}
        assert series(port, "fraudstream_model_info") == {f'{{version="{bad}"}}': 1}
        produce(control, transactions("b", 10))
        assert versions_scored(control, "b", 10) == {bad}
        assert series(port, "fraudstream_model_swaps_total") == {"": 1}  # counted once

        # A running worker given a promotion that does not load keeps its model.
        failures = workers.metric(port, "fraudstream_model_load_failures_total")
        asyncio.run(publish_promotion(control, Promotion(UNKNOWN, "2024-05-01T00:00:00Z", bad)))
        workers.wait_for_metric(
            port, "fraudstream_model_load_failures_total", failures + 1, timeout_s=20
        )
        status, body = ready(port)
        assert status == 200
        assert body["model_fallback"]["refused_version"] == UNKNOWN
        produce(control, transactions("c", 10))
        assert versions_scored(control, "c", 10) == {bad}

        # A promotion that loads ends the fallback.
        fixed = register_model(registry_dir, small, alert_share=0.1, promote=False)
        promote(control, fixed)
        workers.wait_for_metric(port, "fraudstream_model_swaps_total", 2, timeout_s=20)
        status, body = ready(port)
        assert (status, body.get("model_fallback")) == (200, None)
        assert body["model_version"] == fixed
        assert series(port, "fraudstream_model_fallback") == {}
        produce(control, transactions("d", 10))
        assert versions_scored(control, "d", 10) == {fixed}
    finally:
        assert workers.stop_all() == [0], workers.log()


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``fraudstream`` as a user would, with the test's settings."""
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env={**os.environ, **settings.as_env(), "FRAUDSTREAM_LOG_LEVEL": "warn"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_train_promote_reaches_the_workers_and_model_list_agrees(
    control: Settings, tmp_path: Path, free_port: Callable[[], int], small: pl.DataFrame
) -> None:
    registry_dir = control.model_registry_dir
    first = register_model(registry_dir, small, alert_share=0.05, promote=False)
    promote(control, first)
    dataset = tmp_path / "tx.parquet"
    labelled = simulate(SimulationConfig(customers=100, terminals=200, days=36, seed=5))
    write_dataset(labelled, dataset)
    workers = Workers(control, tmp_path, free_port)
    _, port = workers.start()
    try:
        workers.wait_ready(port)
        wait_ready(workers, port)
        produce(control, transactions("a", 10))
        assert versions_scored(control, "a", 10) == {first}

        trained = run_cli(
            control, "train", "--data", str(dataset), "--model", "lr", "--alert-budget", "5",
            "--promote",
        )  # fmt: skip
        assert trained.returncode == 0, trained.stdout + trained.stderr
        (second,) = re.findall(r"^registered (\S+) in ", trained.stdout, re.MULTILINE)
        assert f"promoted {second} (previous: {first})" in trained.stdout
        assert control.topic_names["model_control"] in trained.stdout

        workers.wait_for_metric(port, "fraudstream_model_swaps_total", 1, timeout_s=30)
        assert series(port, "fraudstream_model_info") == {f'{{version="{second}"}}': 1}
        produce(control, transactions("b", 10))
        assert versions_scored(control, "b", 10) == {second}

        listed = run_cli(control, "model", "list")
        assert listed.returncode == 0, listed.stderr
        assert f"* {second}" in listed.stdout
        assert f"  {first}" in listed.stdout

        # A worker started now runs it too: the topic and the registry agree.
        assert workers.stop_all() == [0], workers.log()
        _, port = workers.start()
        workers.wait_ready(port)
        body = wait_ready(workers, port)
        assert body == {"status": "ready", "model_version": second}
        produce(control, transactions("c", 10))
        assert versions_scored(control, "c", 10) == {second}
    finally:
        assert workers.stop_all() == [0], workers.log()
    history = ModelRegistry(registry_dir).history()
    assert [p.version for p in history] == [first, second]
    assert datetime.fromisoformat(history[-1].promoted_at) <= datetime.now(UTC)
