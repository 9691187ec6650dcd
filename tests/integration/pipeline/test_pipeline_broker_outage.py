"""A worker's pages answer within a second through a broker outage, and it loses nothing.

A worker whose Kafka is a spare one-node broker of the test's own (never the shared one)
scores a paced replay; the test SIGKILLs that broker mid-stream, keeps it down for
``OUTAGE_S`` seconds and starts it again, while a thread asks /health, /ready and
/metrics every half second. Every answer comes within a second; /health stays 200 (an
outage is not a hang); once the worker's clients have failed to reach the broker,
/ready is 503 with "kafka unavailable since ..." and ``fraudstream_kafka_available``
reads 0 until the broker is back, then 200 and 1. Afterwards every transaction of the
replay has exactly one score record, with the offline engine's features: the outage
neither lost nor repeated an event, nor made a terminal read that was not final.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import astuple
from pathlib import Path

import pytest
import redis
from pipeline_harness import (
    Answer,
    Poller,
    Workers,
    check_outputs,
    read_topic,
    replay,
    sample,
    scenario,
    wait_until_applied,
)
from spare_kafka import kill_broker, spare_broker

from features import dataset
from features.simulator import SimulationConfig
from streams.contracts import DecodeError, decode_score
from streams.localinfra import LocalKafka
from streams.settings import Settings

pytestmark = pytest.mark.slow

DATA = SimulationConfig(
    customers=100,
    terminals=200,
    days=24,
    compromised_terminals_per_day=1,
    compromised_customers_per_day=1,
    seed=29,
)
RATE = 200  # events per second: about 18 s of stream, the outage after its first seconds
OUTAGE_S = 20.0
#: Seconds the worker may take to notice the broker is gone (its clients' first failure).
NOTICE_S = 5.0


def kafka_available(answer: Answer) -> float | None:
    return sample(answer, "fraudstream_kafka_available")


@pytest.fixture
def broker(
    tmp_path: Path, base_settings: Settings, free_port: Callable[[], int]
) -> Iterator[LocalKafka]:
    with spare_broker(base_settings, tmp_path / "kafka-local", free_port) as made:
        yield made


def test_pages_answer_through_a_broker_outage_and_every_event_scores_once(
    settings: Settings,
    tmp_path: Path,
    free_port: Callable[[], int],
    broker: LocalKafka,
) -> None:
    case = scenario(
        settings, tmp_path, DATA, alert_share=0.05, kafka_bootstrap_servers=broker.address
    )
    transactions, path, offline, version, settings = astuple(case)
    client = redis.Redis.from_url(settings.redis_url)

    workers = Workers(settings, tmp_path, free_port)
    _, port = workers.start()
    try:
        workers.wait_ready(port)
        sender = replay(settings, path, "--rate", str(RATE))
        workers.wait_for_metric(port, "fraudstream_transactions_total", 300, 60)
        with Poller(port) as poller:
            time.sleep(1)
            assert sender.poll() is None, "the replay ended before the outage: slow it down"
            down_at = time.monotonic()
            kill_broker(broker)
            time.sleep(OUTAGE_S)
            up_at = time.monotonic()
            broker.start()
            answers_at = time.monotonic()
            deadline = answers_at + 60
            while not any(a.status == 200 for a in poller.of("/ready", start=up_at)):
                assert time.monotonic() < deadline, "/ready never turned 200 after the outage"
                time.sleep(0.5)
            time.sleep(2)
        output, _ = sender.communicate(timeout=120)
        assert sender.returncode == 0, output.decode()
        wait_until_applied(settings, client, transactions)
        scores = read_topic(settings, settings.topic_names["scores"])
    finally:
        codes = workers.stop_all()
        client.close()
    assert codes == [0], workers.log()

    # Every page answered every time, within a second, outage or not.
    slow = [a for a in poller.answers if a.status is None or a.seconds >= 1.0]
    assert slow == [], slow[:5]
    assert all(a.status == 200 for a in poller.of("/health")), workers.log()
    assert all(a.status == 200 for a in poller.of("/metrics"))

    # /ready: 503 naming Kafka from shortly after the kill until the broker is back.
    during = poller.of("/ready", start=down_at + NOTICE_S, end=up_at)
    assert during
    assert all(a.status == 503 for a in during), during
    assert all("kafka unavailable since" in json.loads(a.body)["reason"] for a in during)
    assert {kafka_available(a) for a in poller.of("/metrics", down_at + NOTICE_S, up_at)} == {0.0}
    unready = [a for a in poller.of("/ready") if a.status == 503]
    first_ok_after = min(a.at for a in poller.of("/ready", start=up_at) if a.status == 200)
    assert all(a.status == 200 for a in poller.of("/ready", start=first_ok_after))
    assert kafka_available(poller.of("/metrics", start=first_ok_after)[-1]) == 1.0

    # Every transaction scored exactly once: nothing lost, nothing repeated.
    copies = Counter[str]()
    for message in scores:
        record = decode_score(message.value)
        assert not isinstance(record, DecodeError)
        copies[record.tx_id] += 1
    assert set(copies) == set(transactions[dataset.TX_ID].to_list())
    assert [tx for tx, n in copies.items() if n > 1] == []

    during_times = sorted(a.seconds for a in poller.answers if down_at <= a.at <= up_at)
    print(
        f"\n{len(poller.answers)} answers, {len(during_times)} during a {OUTAGE_S:.0f} s "
        f"broker outage: slowest {during_times[-1] * 1000:.1f} ms, median "
        f"{during_times[len(during_times) // 2] * 1000:.1f} ms; /ready 503 from "
        f"{min(a.at for a in unready) - down_at:+.1f} s to "
        f"{max(a.at for a in unready) - down_at:+.1f} s after the kill; broker answering "
        f"{answers_at - up_at:.1f} s after the restart, "
        f"/ready 200 {first_ok_after - answers_at:.1f} s after that; {sum(copies.values())} "
        f"score records for {len(transactions)} transactions; max event loop silence "
        f"{max(json.loads(a.body)['event_loop_silent_s'] for a in poller.of('/health')):.1f} s"
    )

    # Through the outage, every transaction has the offline engine's features and alerts.
    check_outputs(settings, offline, version)
