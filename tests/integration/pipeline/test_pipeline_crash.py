"""A worker SIGKILLed mid-stream and restarted loses no alert and counts nothing twice.

The replay runs at a steady pace while the worker is killed twice at random moments and
restarted each time. At-least-once for outputs: every transaction has a score record and
every transaction that scored at or above the threshold has its alert (a replayed one
carries the same alert_id). Exactly-once for state: every score record holds the
customer features of the offline engine, and the terminal states left in Redis hold each
terminal's transactions exactly once, with the replayed forwards skipped.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import redis
from pipeline_harness import Message, Workers, read_topic, register_model, replay

from features import dataset
from features.offline import compute_features
from features.online import EntityState
from features.simulator import SimulationConfig, simulate, write_dataset
from features.spec import DEFAULT_FEATURES, Entity
from streams.contracts import DecodeError, decode_alert, decode_score
from streams.kafka import ensure_topics, product_topics
from streams.pipeline import TERMINAL_TABLE
from streams.pipeline.terminals import terminal_partition
from streams.records import alert_id
from streams.settings import Settings
from streams.tablestore.keys import entry_key, partition_prefix

pytestmark = pytest.mark.slow

DATA = SimulationConfig(
    customers=200,
    terminals=400,
    days=24,
    compromised_terminals_per_day=1,
    compromised_customers_per_day=1,
    seed=11,
)
RATE = 400  # events per second: about 25 s of stream, enough for two kills


def test_sigkilled_workers_lose_no_alert_and_count_nothing_twice(
    settings: Settings,
    tmp_path: Path,
    free_port: Callable[[], int],
    redis_client: redis.Redis,
) -> None:
    transactions = simulate(DATA)
    path = tmp_path / "transactions.parquet"
    write_dataset(transactions, path)
    offline = compute_features(transactions)
    version = register_model(tmp_path / "registry", offline, alert_share=0.05)
    settings = settings.model_copy(
        update={
            "model_registry_dir": tmp_path / "registry",
            # A killed worker's partitions move after 6 s, the broker's minimum.
            "kafka_session_timeout_s": 6.0,
            "kafka_heartbeat_interval_s": 1.0,
        }
    )
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    names = settings.topic_names
    rng = random.Random(5)

    workers = Workers(settings, tmp_path, free_port)
    worker, port = workers.start()
    try:
        workers.wait_ready(port)
        sender = replay(settings, path, "--rate", str(RATE))
        for _ in range(2):
            # Kill a worker that is scoring, at a random point of its stream.
            processed = rng.randint(300, 1500)
            workers.wait_for_metric(port, "fraudstream_transactions_total", processed, 90)
            assert sender.poll() is None, "the replay ended before the kill: slow it down"
            workers.kill(worker)
            worker, port = workers.start()
        output, _ = sender.communicate(timeout=120)
        assert sender.returncode == 0, output.decode()
        everyone = set(transactions[dataset.TX_ID].to_list())

        def all_scored(messages: list[Message]) -> bool:
            return len(messages) >= len(everyone) and len(_scored_ids(messages)) == len(everyone)

        read_topic(settings, names["scores"], until=all_scored, timeout_s=120)
        # The terminal agents run behind the scorer: let them drain and commit.
        deadline = time.monotonic() + 60
        while _terminal_mismatches(settings, redis_client, transactions):
            assert time.monotonic() < deadline, "terminal states never caught up"
            time.sleep(1)
    finally:
        codes = workers.stop_all()
    assert codes == [0], workers.log()
    scores = read_topic(settings, names["scores"])
    alerts = read_topic(settings, names["alerts"])
    assert read_topic(settings, names["dlq"]) == []

    # Outputs: at least once, and the same decisions however often a transaction ran.
    exact = offline.rows_by_key(dataset.TX_ID, named=True, unique=True)
    customer = [f.name for f in DEFAULT_FEATURES.features if f.entity is not Entity.TERMINAL]
    above: set[str] = set()
    threshold = None
    replayed = 0
    seen: set[str] = set()
    for message in scores:
        record = decode_score(message.value)
        assert not isinstance(record, DecodeError)
        replayed += record.tx_id in seen
        seen.add(record.tx_id)
        threshold = record.threshold
        for name in customer:
            assert math.isclose(
                record.features[name], float(exact[record.tx_id][name]), abs_tol=1e-9
            ), (record.tx_id, name)
        if record.score >= record.threshold:
            above.add(record.tx_id)
    assert seen == everyone
    assert threshold is not None
    alerted: dict[str, str] = {}
    for message in alerts:
        alert = decode_alert(message.value)
        assert not isinstance(alert, DecodeError)
        assert alert.alert_id == alert_id(alert.tx_id, version)
        alerted[alert.tx_id] = alert.alert_id
    assert set(alerted) == above, (len(alerted), len(above))
    assert len(above) > 50

    # State: each terminal's transactions in Redis exactly once (still true after stop).
    assert _terminal_mismatches(settings, redis_client, transactions) == []
    # The kills must have made the worker process some events again (else nothing was
    # tested): replayed scores are the visible trace of it.
    assert replayed > 0, "no event was processed twice: the kills hit no unflushed state"


def _scored_ids(messages: list[Message]) -> set[str]:
    ids = set()
    for message in messages:
        record = decode_score(message.value)
        if not isinstance(record, DecodeError):
            ids.add(record.tx_id)
    return ids


def _terminal_mismatches(
    settings: Settings, client: redis.Redis, transactions: pl.DataFrame
) -> list[str]:
    """Terminals whose stored transaction times differ from the dataset's (in retention)."""
    partitions = settings.topic_partitions
    times = (
        transactions.select(dataset.TERMINAL_ID, t=pl.col(dataset.TX_TIME).dt.epoch("ms"))
        .group_by(dataset.TERMINAL_ID)
        .agg(pl.col("t").sort())
    )
    wrong = []
    for terminal, expected in times.iter_rows():
        partition = terminal_partition(terminal.encode(), partitions)
        prefix = partition_prefix(
            settings.redis_key_prefix, settings.app_id, TERMINAL_TABLE, partition
        )
        raw = client.get(entry_key(prefix, terminal.encode()))
        assert raw is None or isinstance(raw, bytes)
        state = EntityState() if raw is None else EntityState.from_bytes(raw)
        newest = expected[-1]
        kept = [t for t in expected if t > newest - _terminal_retention()]
        if state.event_times() != kept:
            wrong.append(terminal)
    return wrong


def _terminal_retention() -> int:
    return DEFAULT_FEATURES.retention_ms(Entity.TERMINAL)
