"""Catch-up is exact: a backlog with fraud reports, read from its start by two workers.

The whole dataset (over 100,000 transactions and their fraud reports, 6 partitions) is in
Kafka before any worker starts, the way a new deployment meets the last weeks of
history or a fleet meets the queue after an outage. The scorers could run days of event
time ahead of the terminal agents; the terminal watermarks (streams.pipeline.watermarks)
hold each transaction back until its terminal features are final. So every
transaction's 24 features must equal the offline engine's, exactly, and the alerts must
be the offline engine's: with both workers running throughout, and with one SIGKILLed
and restarted in the middle of the catch-up.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pipeline_harness import Message, Workers, read_topic, replay, scenario

from features import dataset
from features.simulator import SimulationConfig
from features.spec import DEFAULT_FEATURES
from models.registry import ModelRegistry
from models.scoring import BatchScorer
from streams.contracts import DecodeError, decode_alert, decode_score
from streams.records import Score
from streams.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.cpu_bound]  # two workers on a 100k backlog

#: CATCHUP_CUSTOMERS=2800 gives the 240k-transaction backlog of the issue, for a measurement.
DATA = SimulationConfig(
    customers=int(os.environ.get("CATCHUP_CUSTOMERS", "1200")),
    terminals=2400,
    days=45,
    compromised_terminals_per_day=2,
    compromised_customers_per_day=2,
    seed=23,
)


@pytest.mark.parametrize("kill", [False, True], ids=["steady", "worker-killed"])
def test_a_preloaded_backlog_is_scored_as_the_offline_engine_scores_it(
    settings: Settings, tmp_path: Path, free_port: Callable[[], int], kill: bool
) -> None:
    case = scenario(
        settings,
        tmp_path,
        DATA,
        alert_share=0.03,
        topic_partitions=6,
        # A killed worker's partitions move after 6 s, the broker's minimum.
        kafka_session_timeout_s=6.0,
        kafka_heartbeat_interval_s=1.0,
    )
    transactions, path, offline, version, settings = astuple(case)
    assert transactions.height >= 100_000
    loader = replay(settings, path, "--max")
    output, _ = loader.communicate(timeout=300)
    assert loader.returncode == 0, output.decode()

    expected = transactions.height
    names = settings.topic_names
    workers = Workers(settings, tmp_path, free_port)
    first, port = workers.start()
    _, other = workers.start()
    try:
        workers.wait_ready(port)
        workers.wait_ready(other)
        started = time.monotonic()
        if kill:
            workers.wait_for_metric(port, "fraudstream_transactions_total", expected // 4, 120)
            workers.kill(first)
            _, port = workers.start()
            workers.wait_ready(port)
        scores = read_topic(
            settings,
            names["scores"],
            until=lambda m: len(m) >= expected and len(_latest(m)) >= expected,
            timeout_s=300,
        )
        took = time.monotonic() - started
        inexact = [
            workers.metric(p, "fraudstream_terminal_reads_inexact_total") for p in (port, other)
        ]
        alerts_read = read_topic(settings, names["alerts"])
        dead = read_topic(settings, names["dlq"])
    finally:
        codes = workers.stop_all()
    assert codes == [0, 0], workers.log()
    print(f"caught up on {expected} transactions in {took:.1f} s: {expected / took:.0f} tx/s")
    assert dead == [], [d.headers for d in dead]
    assert inexact == [0.0, 0.0], workers.log()

    # Every score record (a transaction scored twice after the kill has two) holds the
    # offline engine's 24 features, exactly.
    exact = offline.rows_by_key(dataset.TX_ID, named=True, unique=True)
    records = _latest(scores)
    assert len(records) == expected
    wrong: list[tuple[str, str, float, float]] = []
    for message in scores:
        record = decode_score(message.value)
        assert not isinstance(record, DecodeError)
        for name in DEFAULT_FEATURES.names:
            got, want = record.features[name], float(exact[record.tx_id][name])
            if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9):
                wrong.append((record.tx_id, name, got, want))
    assert wrong == [], (len(wrong), wrong[:10])

    # Alerts: the offline features with the same model give the same set.
    model = ModelRegistry(tmp_path / "registry").load(version, DEFAULT_FEATURES.names)
    scorer = BatchScorer(model, DEFAULT_FEATURES.names, pin_threads=False)
    try:
        offline_scores = scorer.score_frame(offline)
        offline_alerts = set(
            offline.filter(pl.Series(offline_scores >= scorer.threshold))[dataset.TX_ID]
        )
        online = np.array([records[t].score for t in offline[dataset.TX_ID]])
        assert np.allclose(online, offline_scores, rtol=1e-9, atol=1e-12)
    finally:
        scorer.close()
    alerted = set()
    for message in alerts_read:
        alert = decode_alert(message.value)
        assert not isinstance(alert, DecodeError)
        alerted.add(alert.tx_id)
    assert alerted == offline_alerts
    assert len(alerted) > 100


def _latest(messages: list[Message]) -> dict[str, Score]:
    """The last score record of each transaction."""
    out: dict[str, Score] = {}
    for message in messages:
        record = decode_score(message.value)
        if not isinstance(record, DecodeError):
            out[record.tx_id] = record
    return out
