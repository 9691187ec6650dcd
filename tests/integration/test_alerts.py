"""``fraudstream alerts`` against the real broker: what it prints, skips, filters and stops on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from typer.testing import CliRunner

from streams.cli import cli
from streams.contracts import ALERT
from streams.kafka import client_options, ensure_topics, product_topics
from streams.records import Alert, AlertReason, alert_id
from streams.settings import Settings, env_var

runner = CliRunner()

MALFORMED = b'{"alert_id": "not-an-alert"'
#: Kafka timestamps of the alerts written by ``_seed``: one a minute, ten minutes ago.
START_MS = int(time.time() * 1000) - 10 * 60_000


def _alert(index: int, score: float) -> Alert:
    return Alert(
        alert_id=alert_id(f"tx-{index}", "v7"),
        tx_id=f"tx-{index}",
        customer_id=f"customer-{index}",
        terminal_id=f"terminal-{index % 3}",
        amount=Decimal(f"{10 + index}.25"),
        currency="EUR",
        tx_time=START_MS - 60_000,
        score=score,
        threshold=0.5,
        model_version="v7",
        reasons=[AlertReason(feature="amount_ratio_1d", value=4.5, contribution=0.3)],
        features={"amount_ratio_1d": 4.5},
        emitted_at=START_MS,
        latency_ms=20 + index,
    )


async def _produce(settings: Settings, messages: Sequence[tuple[bytes, int]]) -> None:
    """Send (value, timestamp) pairs to the alerts topic, keyed as the workers key them."""
    await ensure_topics(settings, product_topics(settings))
    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        for index, (value, timestamp_ms) in enumerate(messages):
            await producer.send_and_wait(
                settings.topic_names["alerts"],
                value,
                key=f"customer-{index}".encode(),
                timestamp_ms=timestamp_ms,
            )
    finally:
        await producer.stop()


def _seed(settings: Settings) -> list[Alert]:
    """Eight alerts (scores 0.55 .. 0.90) over the partitions, a malformed message among them."""
    alerts = [_alert(i, score=0.55 + 0.05 * i) for i in range(8)]
    messages = [(ALERT.encode(a), START_MS + i * 60_000) for i, a in enumerate(alerts)]
    messages.insert(3, (MALFORMED, START_MS + 150_000))
    asyncio.run(_produce(settings, messages))
    return alerts


def _options(settings: Settings) -> list[str]:
    return ["--bootstrap-servers", settings.kafka_bootstrap_servers]


def _run(settings: Settings, *args: str) -> tuple[int, str, str]:
    # The prefix through the environment, as a deployment sets it.
    result = runner.invoke(
        cli,
        [*_options(settings), "alerts", *args],
        env={env_var("topic_prefix"): settings.topic_prefix},
    )
    return result.exit_code, result.stdout, result.stderr


def _ids(stdout: str) -> list[str]:
    return [json.loads(line)["alert_id"] for line in stdout.splitlines()]


async def _groups_with_offsets_on(settings: Settings, topic: str) -> list[str]:
    """The consumer groups that committed an offset on any partition of the topic."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        groups = [group for group, *_ in await admin.list_consumer_groups()]
        offsets = await asyncio.gather(
            *(admin.list_consumer_group_offsets(g, partitions=partitions) for g in groups)
        )
    finally:
        await admin.close()
    # A partition without a committed offset comes back as offset -1.
    return [
        group
        for group, committed in zip(groups, offsets, strict=True)
        if any(o.offset >= 0 for o in committed.values())
    ]


@pytest.mark.timeout(60)
def test_prints_every_alert_as_on_the_wire_and_skips_the_malformed_one(
    settings: Settings,
) -> None:
    alerts = _seed(settings)
    started = time.monotonic()
    code, stdout, stderr = _run(settings, "--from-beginning", "--output", "json")
    elapsed = time.monotonic() - started
    assert code == 0, stderr
    # Byte for byte the values the producer sent, one per line; partitions interleave.
    assert sorted(stdout.encode().splitlines()) == sorted(ALERT.encode(a) for a in alerts)
    warnings = [line for line in stderr.splitlines() if "malformed" in line]
    assert len(warnings) == 2, stderr
    assert warnings[0].startswith("fraudstream alerts: skipped a malformed message (partition ")
    assert warnings[1] == "fraudstream alerts: skipped 1 malformed message"
    assert "Traceback" not in stderr
    # Caught up, it stops at once rather than after some idle timeout.
    assert elapsed < 5, elapsed
    # No consumer group: nobody's committed offsets on the topic, ours included.
    assert asyncio.run(_groups_with_offsets_on(settings, settings.topic_names["alerts"])) == []


@pytest.mark.timeout(60)
def test_filters_limits_and_start_positions(settings: Settings) -> None:
    alerts = _seed(settings)
    ids = [a.alert_id for a in alerts]

    code, stdout, _ = _run(settings, "--from-beginning", "--output", "json", "--min-score", "0.8")
    assert code == 0
    assert sorted(_ids(stdout)) == sorted(a.alert_id for a in alerts if a.score >= 0.8)
    assert len(_ids(stdout)) == 3

    code, stdout, _ = _run(settings, "--from-beginning", "--output", "json", "--limit", "2")
    assert code == 0
    assert len(_ids(stdout)) == 2
    assert set(_ids(stdout)) <= set(ids)

    # The last 3 of the whole topic by send time, although they lie in several partitions.
    code, stdout, _ = _run(settings, "--last", "3", "--output", "json")
    assert code == 0
    assert _ids(stdout) == ids[-3:]

    # Since the 6th alert's send time (ISO-8601, UTC): the 6th, 7th and 8th.
    since = datetime.fromtimestamp((START_MS + 5 * 60_000) / 1000, UTC).isoformat()
    code, stdout, _ = _run(settings, "--since", since, "--output", "json")
    assert code == 0
    assert sorted(_ids(stdout)) == sorted(ids[5:])

    # A relative --since further back than the seed: everything.
    code, stdout, _ = _run(settings, "--since", "1h", "--output", "json")
    assert sorted(_ids(stdout)) == sorted(ids)

    # The table: a header, then one line per alert, in time order for --last.
    code, stdout, _ = _run(settings, "--last", "2")
    assert code == 0
    header, _rule, *rows = stdout.splitlines()
    assert header.split()[:3] == ["time", "(UTC)", "alert"]
    assert [row.split()[2] for row in rows] == [ids[6][:8], ids[7][:8]]
    assert "0.850" in rows[0]
    assert "17.25 EUR" in rows[1]


@pytest.mark.timeout(60)
def test_a_missing_topic_exits_1_with_one_line(settings: Settings) -> None:
    code, stdout, stderr = _run(settings, "--follow")
    assert code == 1
    assert stdout == ""
    assert stderr == (
        f"fraudstream alerts: topic {settings.topic_names['alerts']} does not exist at "
        f"{settings.kafka_bootstrap_servers} (workers create it; is the topic prefix right?)\n"
    )


def _wait_for(path: Path, text: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        assert process.poll() is None, f"exited early: {path.read_text()}"
        assert time.monotonic() < deadline, f"{text!r} never printed: {path.read_text()!r}"
        time.sleep(0.05)


@pytest.mark.timeout(90)
def test_follow_prints_new_alerts_at_once_and_stops_cleanly_on_sigint(
    settings: Settings, tmp_path: Path
) -> None:
    old, new = _alert(1, 0.6), _alert(2, 0.95)
    asyncio.run(_produce(settings, [(ALERT.encode(old), int(time.time() * 1000))]))
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    env = {
        **os.environ,
        env_var("kafka_bootstrap_servers"): settings.kafka_bootstrap_servers,
        env_var("topic_prefix"): settings.topic_prefix,
    }
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams", "alerts", "-f", "--last", "1", "--output", "json"],
            env=env,
            stdout=out,
            stderr=err,
        )
    try:
        # The last alert first (so the feed is open), flushed although stdout is a file.
        _wait_for(stdout_path, old.alert_id, process, timeout_s=30)
        sent = time.monotonic()
        asyncio.run(_produce(settings, [(ALERT.encode(new), int(time.time() * 1000))]))
        _wait_for(stdout_path, new.alert_id, process, timeout_s=10)
        shown_after_s = time.monotonic() - sent
        process.send_signal(signal.SIGINT)
        stopping = time.monotonic()
        code = process.wait(timeout=10)
        stopped_after_s = time.monotonic() - stopping
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, stderr_path.read_text()
    assert stdout_path.read_bytes().splitlines() == [ALERT.encode(old), ALERT.encode(new)]
    assert stderr_path.read_text() == ""
    assert shown_after_s < 2, shown_after_s
    assert stopped_after_s < 3, stopped_after_s
