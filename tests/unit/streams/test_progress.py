"""The worker's progress line, read from its metrics (streams.progress)."""

from __future__ import annotations

from streams.metrics import PipelineMetrics
from streams.progress import Totals, progress_record, read_totals


def test_totals_are_read_from_the_metrics() -> None:
    metrics = PipelineMetrics()
    assert read_totals(metrics) == Totals(0, 0, 0, None)
    metrics.transactions.inc(120)
    metrics.alerts.inc(3)
    metrics.dlq.labels(problem="not_json").inc(2)
    metrics.dlq.labels(problem="too_late").inc()
    metrics.consumer_lag.labels(topic="t", partition="0").set(10)
    metrics.consumer_lag.labels(topic="t", partition="1").set(5)
    assert read_totals(metrics) == Totals(120, 3, 3, 15)


def test_the_line_gives_rate_alerts_dead_letters_and_lag() -> None:
    record = progress_record(Totals(100, 1, 0, 40), Totals(6100, 13, 2, 250), 60.0)
    assert record is not None
    message, fields = record
    assert message == (
        "scoring: 100.0 transactions/s, 12 alerts, 2 dead letters in the last 60 s; "
        "consumer lag 250 records"
    )
    assert fields["transactions_per_s"] == 100.0
    assert fields["consumer_lag_records"] == 250


def test_an_idle_worker_writes_nothing() -> None:
    assert progress_record(Totals(5, 1, 0, 0), Totals(5, 1, 0, 0), 60.0) is None
    unknown = progress_record(Totals(0, 0, 0, None), Totals(10, 0, 0, None), 60.0)
    assert unknown is not None
    assert unknown[0].endswith("consumer lag unknown")
