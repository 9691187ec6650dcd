"""``fraudstream replay`` into the real broker: every row once, keyed, timed, in order."""

from __future__ import annotations

import asyncio
import bisect
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner
from topic_configs import topic_configs
from typer.testing import CliRunner

from features.simulator import SimulationConfig, simulate, write_dataset
from streams.cli import cli
from streams.contracts import TRANSACTION, decode_fraud_report, decode_transaction
from streams.kafka import TopicSpec, client_options, ensure_topics, product_topics, sent_at_ms
from streams.records import FraudReport, Transaction, money
from streams.replay.resume import read_mark
from streams.settings import PROJECT_ROOT, Settings

runner = CliRunner()
TIMEOUT_S = 60


def _options(settings: Settings) -> list[str]:
    return [
        "--bootstrap-servers",
        settings.kafka_bootstrap_servers,
        "--topic-prefix",
        settings.topic_prefix,
        "--partitions",
        str(settings.topic_partitions),
    ]


async def _partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """The partitions of a topic, none if it does not exist."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def _read_all(settings: Settings, topic: str) -> list[Any]:
    """Every record of a topic, partition by partition in offset order (no consumer group)."""
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, auto_offset_reset="earliest", **client_options(settings)
    )
    await consumer.start()
    try:
        partitions = await _partitions(settings, topic)
        assert partitions, f"topic {topic} does not exist"
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        records: dict[int, list[Any]] = defaultdict(list)
        async with asyncio.timeout(TIMEOUT_S):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                    records[tp.partition].extend(batch)
    finally:
        await consumer.stop()
    return [record for partition in sorted(records) for record in records[partition]]


async def _offsets(settings: Settings, topic: str) -> tuple[int, int]:
    """(sum of beginning offsets, sum of end offsets) of a topic; (0, 0) if it does not exist."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
    await consumer.start()
    try:
        partitions = await _partitions(settings, topic)
        if not partitions:
            return 0, 0
        begins = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return sum(begins.values()), sum(ends.values())


def _simulated(tmp_path: Path, days: int = 20) -> tuple[pl.DataFrame, Path]:
    frame = simulate(SimulationConfig(customers=80, terminals=300, days=days, seed=7))
    path = tmp_path / "tx.parquet"
    write_dataset(frame, path)
    return frame, path


def _event(record: Any) -> Transaction | FraudReport:
    """The event a record carries (a transaction has an amount, a report has not)."""
    event = (
        decode_transaction(record.value)
        if b'"amount"' in record.value
        else decode_fraud_report(record.value)
    )
    assert isinstance(event, Transaction | FraudReport), event
    return event


def _by_tx_id(records: Sequence[Any]) -> dict[str, Any]:
    return {_event(record).tx_id: record for record in records}


def _assert_partition_order(records: Sequence[Any]) -> None:
    """Per partition: event time and tx_id strictly increase, send times never go back."""
    by_partition: dict[int, list[Any]] = defaultdict(list)
    for record in records:
        by_partition[record.partition].append(record)
    for partition_records in by_partition.values():
        keys = [(r.timestamp, _event(r).tx_id) for r in partition_records]
        assert keys == sorted(keys)
        assert len(set(keys)) == len(keys)
        sent = [sent_at_ms(r.headers) or 0 for r in partition_records]
        assert 0 not in sent
        assert sent == sorted(sent)


def test_replay_sends_every_row_once_keyed_timed_and_in_order(
    settings: Settings, tmp_path: Path
) -> None:
    frame, path = _simulated(tmp_path)
    started_ms = int(time.time() * 1000)
    result = runner.invoke(cli, [*_options(settings), "--log-level", "error", "replay", str(path)])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    names = settings.topic_names
    reported = frame.filter(pl.col("is_fraud") & pl.col("reported_at").is_not_null())
    assert reported.height > 20
    assert (
        f"{frame.height} transactions to {names['transactions']}, "
        f"{reported.height} fraud reports to {names['fraud_reports']}"
    ) in result.stdout

    transactions = asyncio.run(_read_all(settings, names["transactions"]))
    reports = asyncio.run(_read_all(settings, names["fraud_reports"]))
    partitioner = DefaultPartitioner()
    partitions = list(range(settings.topic_partitions))

    by_tx_id = _by_tx_id(transactions)
    assert len(transactions) == len(by_tx_id) == frame.height  # every row, exactly once
    for row in frame.iter_rows(named=True):
        record = by_tx_id[row["tx_id"]]
        tx_time = int(row["tx_time"].timestamp() * 1000)
        assert record.key == row["customer_id"].encode()
        assert record.partition == partitioner(record.key, partitions, partitions)
        assert record.timestamp == tx_time
        expected = Transaction(
            tx_id=row["tx_id"],
            tx_time=tx_time,
            customer_id=row["customer_id"],
            terminal_id=row["terminal_id"],
            amount=money(row["amount"]),
            currency=row["currency"],
        )
        assert record.value == TRANSACTION.encode(expected)
        assert decode_transaction(record.value) == expected
        sent = sent_at_ms(record.headers)
        assert sent is not None
        assert started_ms <= sent <= int(time.time() * 1000)

    by_report = _by_tx_id(reports)
    assert len(reports) == len(by_report) == reported.height
    for row in reported.iter_rows(named=True):
        record = by_report[row["tx_id"]]
        reported_at = int(row["reported_at"].timestamp() * 1000)
        assert record.key == row["terminal_id"].encode()
        assert record.partition == partitioner(record.key, partitions, partitions)
        assert record.timestamp == reported_at
        assert decode_fraud_report(record.value) == FraudReport(
            tx_id=row["tx_id"],
            customer_id=row["customer_id"],
            terminal_id=row["terminal_id"],
            tx_time=int(row["tx_time"].timestamp() * 1000),
            reported_at=reported_at,
        )

    _assert_partition_order(transactions)
    _assert_partition_order(reports)


async def _broker_config(settings: Settings, name: str) -> int | None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        broker = str(cluster["brokers"][0]["node_id"])
        response = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, broker, configs={name: None})]
        )
    finally:
        await admin.close()
    for resource in response[0].resources:
        for entry in resource[4]:
            if entry[0] == name and entry[1] is not None:
                return int(entry[1])
    return None


async def test_event_topics_keep_2018_events_through_retention_checks(settings: Settings) -> None:
    interval = await _broker_config(settings, "log.retention.check.interval.ms")
    if interval is None or interval > 5_000:
        pytest.skip(
            f"the broker checks retention every {interval} ms; deploy/local sets 1000 "
            "(restart the local broker after updating)"
        )
    names = settings.topic_names
    event_topics = [names["transactions"], names["fraud_reports"]]
    control = settings.topic("retention-control")  # keeps a day: 2018 events must go
    await ensure_topics(
        settings,
        [*product_topics(settings), TopicSpec(control, 1, config={"retention.ms": "86400000"})],
    )
    for topic in event_topics:
        config = await topic_configs(settings, topic)
        assert config["retention.ms"] == "-1"
        assert config["message.timestamp.type"] == "CreateTime"

    old_ms = 1_522_540_800_000  # 2018-04-01
    producer = AIOKafkaProducer(enable_idempotence=True, **client_options(settings))
    await producer.start()
    try:
        sends = [
            await producer.send(topic, value=b"old", key=f"k{i}".encode(), timestamp_ms=old_ms + i)
            for topic in [*event_topics, control]
            for i in range(20)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()

    # The control topic's deletion proves that a retention check ran over these segments.
    async with asyncio.timeout(TIMEOUT_S):
        while (await _offsets(settings, control)) != (20, 20):  # noqa: ASYNC110 - polls the broker
            await asyncio.sleep(interval / 1000 / 2)
    await asyncio.sleep(2 * interval / 1000)  # and two more checks
    for topic in event_topics:
        assert await _offsets(settings, topic) == (0, 20)
        records = await _read_all(settings, topic)
        assert sorted(r.timestamp for r in records) == [old_ms + i for i in range(20)]


def test_a_topic_that_would_delete_old_events_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    _, path = _simulated(tmp_path, days=3)
    transactions = settings.topic_names["transactions"]
    asyncio.run(
        ensure_topics(
            settings,
            [
                TopicSpec(
                    transactions, settings.topic_partitions, config={"retention.ms": "604800000"}
                )
            ],
        )
    )
    result = runner.invoke(cli, [*_options(settings), "--log-level", "error", "replay", str(path)])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1
    assert f"topic {transactions} deletes events older than 604800000 ms" in result.stderr
    assert asyncio.run(_offsets(settings, transactions)) == (0, 0)  # nothing sent


async def _wait_for_records(settings: Settings, topic: str) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while (await _offsets(settings, topic))[1] == 0:  # noqa: ASYNC110 - polls the broker
            await asyncio.sleep(0.2)


def test_ctrl_c_delivers_what_was_sent_and_says_how_far(settings: Settings, tmp_path: Path) -> None:
    frame, path = _simulated(tmp_path, days=10)
    names = settings.topic_names
    replay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams",
            *_options(settings),
            "--log-level",
            "error",
            "replay",
            str(path),
            "--rate",
            "40",
        ],
        cwd=PROJECT_ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        asyncio.run(_wait_for_records(settings, names["transactions"]))
        replay.send_signal(signal.SIGINT)
        stdout, stderr = replay.communicate(timeout=TIMEOUT_S)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait()
    assert replay.returncode == 130, (stdout, stderr)
    match = re.fullmatch(
        r"fraudstream replay: interrupted: (\d+) events sent and delivered; "
        r"the last: (transaction|fraud report of) (\S+) at (\S+)\n",
        stderr,
    )
    assert match, stderr
    sent = int(match[1])
    assert 0 < sent < frame.height
    assert stdout.startswith("interrupted ")
    transactions = asyncio.run(_read_all(settings, names["transactions"]))
    reports = asyncio.run(_read_all(settings, names["fraud_reports"]))
    assert len(transactions) + len(reports) == sent  # all delivered, nothing more
    # The last event in send order: event time, reports before transactions, tx_id.
    last = max(
        [*transactions, *reports],
        key=lambda r: (r.timestamp, r.topic == names["transactions"], _event(r).tx_id),
    )
    assert (last.topic == names["transactions"]) == (match[2] == "transaction")
    assert _event(last).tx_id == match[3]


async def _read_report_ends(
    settings: Settings, replay: subprocess.Popen[bytes]
) -> list[tuple[int, dict[int, int]]]:
    """The reports topic's end offsets, read again and again while the replay runs.

    Each reading comes with the wall-clock time (epoch ms) just before it was asked for.
    """
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
    await consumer.start()
    readings: list[tuple[int, dict[int, int]]] = []
    try:
        reports = await _partitions(settings, settings.topic_names["fraud_reports"])
        async with asyncio.timeout(TIMEOUT_S):
            while replay.poll() is None:
                at_ms = time.time_ns() // 1_000_000
                ends = await consumer.end_offsets(reports)
                readings.append((at_ms, {tp.partition: end for tp, end in ends.items()}))
    finally:
        await consumer.stop()
    return readings


def test_every_report_before_a_transaction_is_in_the_log_when_it_is_sent(
    settings: Settings, tmp_path: Path
) -> None:
    """Whoever reads the reports partitions' ends after a replayed transaction was sent
    (its ``fraudstream-sent-ms``) finds every report before it in the replay's order.

    The scorer's terminal reads rely on it (``streams.pipeline.watermarks.ReportEnds``).
    Reports travel in other partitions' batches than the transactions: before the replay
    waited for their acknowledgement, a report lingering in its batch reached the log
    after later transactions were sent (3 terminal features off by one in a parity run).
    """
    _, path = _simulated(tmp_path, days=40)
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    replay = subprocess.Popen(
        [sys.executable, "-m", "streams", "--log-level", "warn", "replay", str(path), "--max"],
        env={**os.environ, **settings.as_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        readings = asyncio.run(_read_report_ends(settings, replay))
        output, _ = replay.communicate(timeout=TIMEOUT_S)
    finally:
        if replay.poll() is None:
            replay.kill()
    assert replay.returncode == 0, output.decode()
    names = settings.topic_names
    reports = asyncio.run(_read_all(settings, names["fraud_reports"]))
    transactions = asyncio.run(_read_all(settings, names["transactions"]))
    assert len(reports) > 50
    assert len(readings) > 100
    sent: list[tuple[int, int | None]] = []
    for transaction in transactions:
        mark = read_mark(transaction.headers)
        assert mark is not None
        sent.append((mark, sent_at_ms(transaction.headers)))
    sent.sort()
    indexes = [index for index, _ in sent]
    times = [at_ms for at_ms, _ in readings]
    late = []
    for report in reports:
        index = read_mark(report.headers)
        assert index is not None
        following = bisect.bisect_right(indexes, index)  # the next transaction sent
        if following == len(sent):
            continue
        sent_ms = sent[following][1]
        assert sent_ms is not None
        # The first reading asked for after it was sent (a later millisecond).
        first = bisect.bisect_right(times, sent_ms)
        if first < len(readings) and readings[first][1][report.partition] <= report.offset:
            late.append((index, sent[following][0]))
    assert late == [], f"{len(late)} reports reached the log after a later transaction was sent"
