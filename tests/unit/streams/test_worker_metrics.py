"""PipelineMetrics: names, types, the model-version and event-time logic, isolation."""

from __future__ import annotations

import asyncio
import gc
import math
import time
from itertools import pairwise
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streams.app import create_app
from streams.contracts import Problem
from streams.metrics import (
    GcPauseObserver,
    PipelineMetrics,
    install_metrics_view,
    watch_event_loop,
)
from streams.settings import Settings

#: attribute, exposed name (as on the # TYPE line), Prometheus type.
METRICS = [
    ("transactions", "fraudstream_transactions_total", "counter"),
    ("alerts", "fraudstream_alerts_total", "counter"),
    ("dlq", "fraudstream_dlq_records_total", "counter"),
    ("fraud_reports", "fraudstream_fraud_reports_total", "counter"),
    ("terminal_transactions", "fraudstream_terminal_transactions_total", "counter"),
    ("duplicates_skipped", "fraudstream_duplicates_skipped_total", "counter"),
    ("inexact_terminal_reads", "fraudstream_terminal_reads_inexact_total", "counter"),
    ("model_swaps", "fraudstream_model_swaps_total", "counter"),
    ("model_load_failures", "fraudstream_model_load_failures_total", "counter"),
    ("batch_size", "fraudstream_batch_size", "histogram"),
    ("event_to_alert_latency", "fraudstream_event_to_alert_latency_seconds", "histogram"),
    ("processing_latency", "fraudstream_processing_latency_seconds", "histogram"),
    ("redis_flush", "fraudstream_redis_flush_seconds", "histogram"),
    ("model_info", "fraudstream_model_info", "gauge"),
    ("terminal_lag", "fraudstream_terminal_aggregation_lag_seconds", "gauge"),
    ("scorer_event_time", "fraudstream_scorer_event_time_seconds", "gauge"),
    ("terminal_event_time", "fraudstream_terminal_event_time_seconds", "gauge"),
    ("event_loop_lag", "fraudstream_event_loop_lag_seconds", "histogram"),
    ("gc_pause", "fraudstream_gc_pause_seconds", "histogram"),
]


def text(metrics: PipelineMetrics) -> str:
    return metrics.render()[0].decode()


def samples(metrics: PipelineMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the rendered body, parsed back, by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text(metrics))
        for s in family.samples
    }


def value(metrics: PipelineMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def buckets(metrics: PipelineMetrics, name: str) -> list[float]:
    return sorted(
        float(labels["le"])
        for (sample, label_set), _ in samples(metrics).items()
        if sample == f"{name}_bucket"
        for labels in [dict(label_set)]
    )


@pytest.mark.parametrize(("attribute", "name", "kind"), METRICS)
def test_every_metric_is_rendered_with_its_type(attribute: str, name: str, kind: str) -> None:
    metrics = PipelineMetrics()
    body, content_type = metrics.render()
    assert content_type == CONTENT_TYPE_LATEST
    assert f"# TYPE {name} {kind}\n" in body.decode()
    # The attribute is the metric of that name, not another one.
    described = getattr(metrics, attribute).describe()[0]
    assert described.type == kind
    assert name in (described.name, f"{described.name}_total")


def test_unlabelled_metrics_have_a_sample_before_any_update() -> None:
    metrics = PipelineMetrics()
    assert value(metrics, "fraudstream_transactions_total") == 0
    assert value(metrics, "fraudstream_batch_size_count") == 0
    assert math.isnan(value(metrics, "fraudstream_terminal_aggregation_lag_seconds") or 0)


def test_process_gc_and_platform_collectors_are_registered() -> None:
    body = text(PipelineMetrics())
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "python_gc_collections_total",
        "python_info",
    ):
        assert f"# TYPE {name} " in body


def test_updates_show_in_the_rendered_body() -> None:
    metrics = PipelineMetrics()
    metrics.transactions.inc(250)
    metrics.dlq.labels(problem="too_late").inc(3)
    metrics.duplicates_skipped.labels(source="fraud_reports").inc()
    metrics.batch_size.observe(250)
    metrics.redis_flush.labels(table="terminal").observe(0.004)
    assert value(metrics, "fraudstream_transactions_total") == 250
    assert value(metrics, "fraudstream_dlq_records_total", problem="too_late") == 3
    assert value(metrics, "fraudstream_duplicates_skipped_total", source="fraud_reports") == 1
    assert value(metrics, "fraudstream_batch_size_bucket", le="200.0") == 0
    assert value(metrics, "fraudstream_batch_size_bucket", le="500.0") == 1
    assert value(metrics, "fraudstream_redis_flush_seconds_count", table="terminal") == 1


def test_every_known_dlq_problem_starts_at_zero() -> None:
    metrics = PipelineMetrics()
    for problem in Problem:
        assert value(metrics, "fraudstream_dlq_records_total", problem=problem.value) == 0


def test_batch_size_buckets_are_the_specified_ones() -> None:
    assert buckets(PipelineMetrics(), "fraudstream_batch_size") == [
        1,
        2,
        5,
        10,
        20,
        50,
        100,
        200,
        500,
        1000,
        2000,
        math.inf,
    ]


@pytest.mark.parametrize(
    "name",
    ["fraudstream_event_to_alert_latency_seconds", "fraudstream_processing_latency_seconds"],
)
def test_latency_buckets_span_1ms_to_30s_densest_between_5_and_200ms(name: str) -> None:
    bounds = buckets(PipelineMetrics(), name)
    assert bounds[0] == 0.001
    assert bounds[-2:] == [30, math.inf]
    finite = bounds[:-1]
    ratios = [high / low for low, high in pairwise(finite)]
    assert all(1 < r <= 3 for r in ratios)  # log-spaced: no gap wider than x3
    dense = [r for low, r in zip(finite, ratios, strict=False) if 0.005 <= low < 0.2]
    sparse = [r for low, r in zip(finite, ratios, strict=False) if low >= 0.2 or low < 0.005]
    assert len(dense) >= 10
    assert max(dense) < min(sparse)


def test_model_info_has_only_the_active_version() -> None:
    metrics = PipelineMetrics()
    assert "fraudstream_model_info{" not in text(metrics)  # no model yet, no series
    metrics.set_model_version("2024-06-01")
    assert value(metrics, "fraudstream_model_info", version="2024-06-01") == 1
    metrics.set_model_version("2024-07-01")
    body = text(metrics)
    assert 'fraudstream_model_info{version="2024-07-01"} 1.0' in body
    assert "2024-06-01" not in body
    metrics.set_model_version("2024-07-01")  # same version again: still one series
    assert text(metrics).count("fraudstream_model_info{") == 1


def test_event_times_are_maxima_and_lag_is_their_difference() -> None:
    metrics = PipelineMetrics()
    day_ms = 86_400_000
    metrics.observe_event_times(scorer_ms=10 * day_ms)
    assert value(metrics, "fraudstream_scorer_event_time_seconds") == 10 * 86_400
    assert math.isnan(value(metrics, "fraudstream_terminal_event_time_seconds") or 0)
    # The lag is unknown until the terminal side has reported once.
    assert math.isnan(value(metrics, "fraudstream_terminal_aggregation_lag_seconds") or 0)

    metrics.observe_event_times(terminal_ms=2 * day_ms)
    assert value(metrics, "fraudstream_terminal_event_time_seconds") == 2 * 86_400
    assert value(metrics, "fraudstream_terminal_aggregation_lag_seconds") == 8 * 86_400

    # Older batches (other partitions) never move a watermark back.
    metrics.observe_event_times(scorer_ms=9 * day_ms, terminal_ms=day_ms)
    assert value(metrics, "fraudstream_scorer_event_time_seconds") == 10 * 86_400
    assert value(metrics, "fraudstream_terminal_event_time_seconds") == 2 * 86_400
    assert value(metrics, "fraudstream_terminal_aggregation_lag_seconds") == 8 * 86_400

    metrics.observe_event_times(scorer_ms=10 * day_ms + 500, terminal_ms=4 * day_ms)
    assert value(metrics, "fraudstream_scorer_event_time_seconds") == 10 * 86_400 + 0.5
    assert value(metrics, "fraudstream_terminal_aggregation_lag_seconds") == 6 * 86_400 + 0.5

    # The terminal aggregation may run ahead of the scorer: a negative lag.
    metrics.observe_event_times(terminal_ms=11 * day_ms)
    assert value(metrics, "fraudstream_terminal_aggregation_lag_seconds") == -86_400 + 0.5


def test_two_instances_do_not_share_values() -> None:
    first, second = PipelineMetrics(), PipelineMetrics()
    assert first.registry is not second.registry
    first.transactions.inc(5)
    first.set_model_version("a")
    first.observe_event_times(scorer_ms=1_000, terminal_ms=500)
    assert value(second, "fraudstream_transactions_total") == 0
    assert "fraudstream_model_info{" not in text(second)
    assert math.isnan(value(second, "fraudstream_scorer_event_time_seconds") or 0)


def test_a_given_registry_is_used_and_cannot_hold_two_instances() -> None:
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    assert metrics.registry is registry
    assert registry.get_sample_value("fraudstream_transactions_total") == 0
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PipelineMetrics(registry)


async def test_view_returns_the_rendered_metrics(tmp_path: Path) -> None:
    app = create_app(Settings(local_dir=tmp_path, app_id="metrics-view-test"))
    metrics = PipelineMetrics()
    metrics.alerts.inc(7)
    install_metrics_view(app, metrics, path="/prom")
    view = app.web.views["/prom"]
    response = await view.get(object())
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert b"fraudstream_alerts_total 7.0\n" in response.body


async def test_the_event_loop_watch_sees_a_blocked_loop() -> None:
    metrics = PipelineMetrics()
    watch = asyncio.create_task(watch_event_loop(metrics.event_loop_lag, interval_s=0.01))
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.12)  # noqa: ASYNC251 - holds the loop, as a long synchronous call would
        await asyncio.sleep(0.05)
    finally:
        watch.cancel()
    assert (value(metrics, "fraudstream_event_loop_lag_seconds_count") or 0) >= 3
    # One timer fired about 0.11 s late; the quiet ones were not late by much.
    assert (value(metrics, "fraudstream_event_loop_lag_seconds_sum") or 0) >= 0.1
    late = value(metrics, "fraudstream_event_loop_lag_seconds_bucket", le="0.075") or 0
    count = value(metrics, "fraudstream_event_loop_lag_seconds_count") or 0
    assert count - late == 1


def test_full_collections_are_timed_and_young_ones_are_not() -> None:
    metrics = PipelineMetrics()
    observer = GcPauseObserver(metrics.gc_pause)
    observer.install()
    observer.install()  # twice: still one callback
    try:
        assert gc.callbacks.count(observer) == 1
        gc.collect(0)
        gc.collect(2)
        gc.collect(1)
    finally:
        observer.uninstall()
    assert observer not in gc.callbacks
    full = value(metrics, "fraudstream_gc_pause_seconds_count", generation="2") or 0
    middle = value(metrics, "fraudstream_gc_pause_seconds_count", generation="1") or 0
    assert full >= 1
    assert middle >= 1
    assert value(metrics, "fraudstream_gc_pause_seconds_count", generation="0") is None
