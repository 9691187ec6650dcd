"""The worker metrics an operator reads beside throughput: build, lag, rebalances, state."""

from __future__ import annotations

import platform
from importlib.metadata import version

from prometheus_client import CollectorRegistry

from streams.metrics import DUPLICATE_SOURCES, PipelineMetrics


def body(metrics: PipelineMetrics) -> str:
    return metrics.render()[0].decode()


def test_build_info_names_the_versions_running() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    labels = {
        "version": version("fraudstream"),
        "faust": version("faust-streaming"),
        "aiokafka": version("aiokafka"),
        "python": platform.python_version(),
    }
    assert metrics.registry.get_sample_value("fraudstream_build_info", labels) == 1


def test_no_created_series_are_exported() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    metrics.transactions.inc()
    metrics.rebalance_duration.observe(1)
    assert "_created" not in body(metrics)


def test_every_duplicate_source_starts_at_zero() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    for source in DUPLICATE_SOURCES:
        sample = metrics.registry.get_sample_value(
            "fraudstream_duplicates_skipped_total", {"source": source}
        )
        assert sample == 0, source


def test_new_metrics_have_their_types_and_unlabelled_ones_a_sample() -> None:
    text = body(PipelineMetrics(CollectorRegistry()))
    for name, kind in [
        ("fraudstream_consumer_lag_records", "gauge"),
        ("fraudstream_rebalances_total", "counter"),
        ("fraudstream_rebalance_duration_seconds", "histogram"),
        ("fraudstream_assigned_partitions", "gauge"),
        ("fraudstream_table_entries", "gauge"),
        ("fraudstream_redis_available", "gauge"),
        ("fraudstream_build_info", "gauge"),
    ]:
        assert f"# TYPE {name} {kind}\n" in text, name
    assert "fraudstream_rebalances_total 0.0" in text
    assert "fraudstream_redis_available NaN" in text
