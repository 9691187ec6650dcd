"""One log line a minute while a worker scores: rate, alerts, dead letters, lag.

Read from the worker's own metrics (``streams.metrics``): the agents count once per
micro-batch and nothing is logged per event. A worker with nothing to score writes
nothing; the stall detector (``streams.stall``) speaks for a backlog that does not move.
In JSON logs (``FRAUDSTREAM_LOG_FORMAT=json``) the figures are fields of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from streams.metrics import PipelineMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Totals:
    """A worker's counters at one moment.

    Attributes:
        transactions: Transactions scored since the worker started.
        alerts: Alerts sent since the worker started.
        dead_letters: Records dead-lettered since the worker started, every problem.
        consumer_lag: Records past this worker's positions, its partitions together;
            None before the first lag sample (no partition yet).
    """

    transactions: float
    alerts: float
    dead_letters: float
    consumer_lag: float | None


def read_totals(metrics: PipelineMetrics) -> Totals:
    """The counters of ``metrics`` now (thread-safe reads of prometheus-client metrics)."""

    def total(samples: list[tuple[str, float]], suffix: str = "_total") -> float:
        return sum(value for name, value in samples if name.endswith(suffix))

    def samples(metric: object) -> list[tuple[str, float]]:
        return [(s.name, s.value) for family in metric.collect() for s in family.samples]  # type: ignore[attr-defined]

    lag = samples(metrics.consumer_lag)
    return Totals(
        transactions=total(samples(metrics.transactions)),
        alerts=total(samples(metrics.alerts)),
        dead_letters=total(samples(metrics.dlq)),
        consumer_lag=sum(value for _, value in lag) if lag else None,
    )


def progress_record(
    before: Totals, after: Totals, elapsed_s: float
) -> tuple[str, dict[str, float | int | None]] | None:
    """The progress line between two readings, with its fields; None if nothing was scored.

    Args:
        before: The earlier reading.
        after: The later reading.
        elapsed_s: Seconds between them.
    """
    scored = after.transactions - before.transactions
    dead = after.dead_letters - before.dead_letters
    if scored <= 0 and dead <= 0:
        return None
    fields: dict[str, float | int | None] = {
        "transactions_per_s": round(scored / elapsed_s, 1) if elapsed_s > 0 else None,
        "transactions": int(scored),
        "alerts": int(after.alerts - before.alerts),
        "dead_letters": int(dead),
        "consumer_lag_records": None if after.consumer_lag is None else int(after.consumer_lag),
        "interval_s": round(elapsed_s),
    }
    lag = "unknown" if after.consumer_lag is None else f"{after.consumer_lag:.0f} records"
    rate = fields["transactions_per_s"]
    message = (
        f"scoring: {rate} transactions/s, {fields['alerts']} alerts, "
        f"{fields['dead_letters']} dead letters in the last {elapsed_s:.0f} s; "
        f"consumer lag {lag}"
    )
    return message, fields


async def report_progress(
    metrics: PipelineMetrics,
    interval_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Log :func:`progress_record` every ``interval_s``, forever (a task of the worker)."""
    before, then = read_totals(metrics), clock()
    while True:
        await asyncio.sleep(interval_s)
        after, now = read_totals(metrics), clock()
        record = progress_record(before, after, now - then)
        if record is not None:
            message, fields = record
            logger.info("%s", message, extra={"progress": fields})
        before, then = after, now
