"""streams.lag: consumer lag per assigned partition, from the stall check's reading."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from faust.types import TP
from prometheus_client import CollectorRegistry

from streams.kafka import SENT_AT_HEADER
from streams.lag import LagReporter, TakenRecords, watch_lag
from streams.metrics import PipelineMetrics
from streams.stall import PartitionState

A = TP("transactions", 0)
B = TP("transactions", 1)
CHANGELOG = TP("app-customer_windows-changelog", 0)


def lag(metrics: PipelineMetrics, tp: TP) -> float | None:
    return metrics.registry.get_sample_value(
        "fraudstream_consumer_lag_records", {"topic": tp.topic, "partition": str(tp.partition)}
    )


def test_lag_is_high_watermark_minus_position_and_revoked_partitions_lose_their_series() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    reporter = LagReporter(metrics.consumer_lag)
    reporter.report({A: PartitionState(40, 100, None), B: PartitionState(7, 7, None)})
    assert lag(metrics, A) == 60
    assert lag(metrics, B) == 0
    # B moved to another worker: only its new owner reports it.
    reporter.report({A: PartitionState(100, 100, None)})
    assert lag(metrics, A) == 0
    assert lag(metrics, B) is None


def test_a_position_past_a_stale_high_watermark_is_no_negative_lag() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    LagReporter(metrics.consumer_lag).report({A: PartitionState(105, 100, None)})
    assert lag(metrics, A) == 0


def seconds(metrics: PipelineMetrics, tp: TP) -> float | None:
    return metrics.registry.get_sample_value(
        "fraudstream_consumer_lag_seconds", {"topic": tp.topic, "partition": str(tp.partition)}
    )


class Message:
    def __init__(self, tp: TP, headers: list[tuple[str, bytes]], timestamp: float | None) -> None:
        self.tp = tp
        self.headers = headers
        self.timestamp = timestamp


class Event:
    def __init__(self, message: Message) -> None:
        self.message = message


def test_lag_in_seconds_is_the_age_of_the_last_record_taken_while_behind() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    taken = TakenRecords()
    reporter = LagReporter(metrics.consumer_lag, metrics.consumer_lag_seconds, taken)
    now = time.time()
    replayed = Message(A, [(SENT_AT_HEADER, str(int((now - 30) * 1000)).encode())], 1.5e9)
    taken.note([Event(Message(A, [], now - 90)), Event(replayed)])  # the last one counts
    taken.note([Event(Message(B, [], 4_102_444_800.0))])  # stamped 2100: not read

    reporter.report({A: PartitionState(40, 100, None), B: PartitionState(7, 9, None)})

    age = seconds(metrics, A)
    assert age is not None
    assert 29 <= age < 40
    assert seconds(metrics, B) is None  # behind, but nothing plausible taken yet
    reporter.report({A: PartitionState(100, 100, None)})
    assert seconds(metrics, A) == 0
    assert seconds(metrics, B) is None


class FakeConsumer:
    def __init__(self) -> None:
        self._committed_offset = {A: 10, CHANGELOG: 0}
        self._read_offset: dict[TP, int] = {}
        self.asked: list[set[TP]] = []

    def assignment(self) -> set[TP]:
        return {A, CHANGELOG}

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        self.asked.append(set(tps))
        return dict.fromkeys(tps, 25)

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, 0)


class FakeTables:
    changelog_topics: ClassVar[set[str]] = {CHANGELOG.topic}


class FakeApp:
    def __init__(self) -> None:
        self.consumer = FakeConsumer()
        self.tables = FakeTables()
        self.rebalancing = False


async def test_the_task_reads_source_partitions_only_and_not_while_rebalancing() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    app: Any = FakeApp()
    app.rebalancing = True
    task = asyncio.create_task(watch_lag(app, LagReporter(metrics.consumer_lag), 0.01))
    try:
        await asyncio.sleep(0.05)
        assert app.consumer.asked == []
        app.rebalancing = False
        for _ in range(100):
            if lag(metrics, A) is not None:
                break
            await asyncio.sleep(0.01)
        assert lag(metrics, A) == 15
        assert all(asked == {A} for asked in app.consumer.asked)
    finally:
        task.cancel()
