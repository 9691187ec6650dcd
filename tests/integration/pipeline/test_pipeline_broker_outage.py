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

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import astuple
from pathlib import Path

import pytest
from outage_harness import OutagePlan, run_outage, summary
from pipeline_harness import check_outputs, read_topic, scenario
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
#: Seconds the worker may take to notice the broker is gone (its clients' first failure).
NOTICE_S = 5.0
OUTAGE_S = 20.0
PLAN = OutagePlan(
    notice_s=NOTICE_S,
    reason="kafka unavailable since",
    gauge="fraudstream_kafka_available",
    rate=200,  # events per second: about 18 s of stream, the outage after its first seconds
    scored_before=300,
    scored_timeout_s=60,
    settle_s=1,
    outage_s=OUTAGE_S,
    replay_timeout_s=120,
)


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
    outage = run_outage(case, tmp_path, free_port, PLAN, lambda: kill_broker(broker), broker.start)
    transactions, _, offline, version, settings = astuple(case)
    assert all(a.status == 200 for a in outage.poller.of("/ready", start=outage.ready_again))

    # Every transaction scored exactly once: nothing lost, nothing repeated.
    copies = Counter[str]()
    for message in read_topic(settings, settings.topic_names["scores"]):
        record = decode_score(message.value)
        assert not isinstance(record, DecodeError)
        copies[record.tx_id] += 1
    assert set(copies) == set(transactions[dataset.TX_ID].to_list())
    assert [tx for tx, n in copies.items() if n > 1] == []
    print(
        f"\n{summary(outage, 'broker')}; {sum(copies.values())} score records "
        f"for {len(transactions)} transactions"
    )

    # Through the outage, every transaction has the offline engine's features and alerts.
    check_outputs(settings, offline, version)
