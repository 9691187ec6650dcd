"""End to end: a dataset replayed at full speed through a real worker gives the offline
engine's features, every one of them, and its alerts.

`fraudstream replay --max` sends the dataset far faster than life (days of event time per
second). A terminal feature read at t needs every transaction up to t - 7 days and every
fraud report up to t - 1 hour applied by the terminal agents (docs/operations.md,
"Feature parity"); the scorer holds each transaction back until the terminal watermarks
say so (streams.pipeline.watermarks). So no feature may differ from the offline engine's,
no read may be counted inexact, nothing may be dead-lettered as too late.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pipeline_harness import Workers, read_topic, register_model, replay

from features import dataset
from features.offline import compute_features
from features.simulator import SimulationConfig, simulate, write_dataset
from features.spec import DEFAULT_FEATURES
from models.registry import ModelRegistry
from models.scoring import BatchScorer
from streams.contracts import DecodeError, decode_alert, decode_score
from streams.kafka import ensure_topics, product_topics
from streams.records import Alert, Score, alert_id
from streams.settings import Settings

pytestmark = pytest.mark.slow

DATA = SimulationConfig(
    customers=300,
    terminals=600,
    days=30,
    compromised_terminals_per_day=1,
    compromised_customers_per_day=1,
    seed=7,
)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_replayed_features_and_alerts_equal_offline(
    settings: Settings, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    transactions = simulate(DATA)
    path = tmp_path / "transactions.parquet"
    write_dataset(transactions, path)
    offline = compute_features(transactions)
    version = register_model(tmp_path / "registry", offline, alert_share=0.03)
    settings = settings.model_copy(
        update={"model_registry_dir": tmp_path / "registry", "commit_interval_s": 0.2}
    )
    asyncio.run(ensure_topics(settings, product_topics(settings)))

    workers = Workers(settings, tmp_path, free_port)
    _, port = workers.start()
    try:
        workers.wait_ready(port)
        sender = replay(settings, path, "--max")
        output, _ = sender.communicate(timeout=120)
        assert sender.returncode == 0, output.decode()
        names = settings.topic_names
        expected = transactions.height
        scores = read_topic(
            settings, names["scores"], until=lambda m: len(m) >= expected, timeout_s=90
        )
        alerts_read = read_topic(settings, names["alerts"])
        dead = read_topic(settings, names["dlq"])
        inexact = workers.metric(port, "fraudstream_terminal_reads_inexact_total")
    finally:
        codes = workers.stop_all()
    assert codes == [0], workers.log()
    assert dead == [], [d.headers for d in dead]

    records: dict[str, Score] = {}
    for message in scores:
        decoded = decode_score(message.value)
        assert not isinstance(decoded, DecodeError), decoded
        assert decoded.tx_id not in records, "a transaction was scored twice without a crash"
        records[decoded.tx_id] = decoded
    assert len(records) == expected

    assert inexact == 0, workers.log()

    # --- features -------------------------------------------------------------------
    exact_rows = offline.rows_by_key(dataset.TX_ID, named=True, unique=True)
    wrong = []
    for tx_id, record in records.items():
        assert record.model_version == version
        for name in DEFAULT_FEATURES.names:
            got, want = record.features[name], float(exact_rows[tx_id][name])
            if not close(got, want):
                wrong.append((tx_id, name, got, want))
    assert wrong == [], (len(wrong), wrong[:10])

    # --- scores and alerts ------------------------------------------------------------
    model = ModelRegistry(tmp_path / "registry").load(version, DEFAULT_FEATURES.names)
    scorer = BatchScorer(model, DEFAULT_FEATURES.names, pin_threads=False)
    tx_ids = list(records)
    online_matrix = np.array(
        [[records[t].features[n] for n in DEFAULT_FEATURES.names] for t in tx_ids]
    )
    rescored = scorer.score_batch(online_matrix)
    for tx_id, score in zip(tx_ids, rescored, strict=True):
        assert close(records[tx_id].score, float(score)), tx_id
    should_alert = {t for t, s in zip(tx_ids, rescored, strict=True) if s >= scorer.threshold}
    alerts: dict[str, Alert] = {}
    for message in alerts_read:
        decoded_alert = decode_alert(message.value)
        assert not isinstance(decoded_alert, DecodeError), decoded_alert
        alerts[decoded_alert.tx_id] = decoded_alert
    assert set(alerts) == should_alert
    assert len(alerts_read) == len(alerts)
    # Offline features with the same model and threshold: the same alerts.
    offline_scores = scorer.score_frame(offline)
    offline_alerts = set(
        offline.filter(pl.Series(offline_scores >= scorer.threshold))[dataset.TX_ID].to_list()
    )
    assert offline_alerts == set(alerts)
    for alert in alerts.values():
        assert alert.alert_id == alert_id(alert.tx_id, version)
        assert len(alert.reasons) <= settings.alert_reasons
        assert all(r.contribution is not None and r.contribution > 0 for r in alert.reasons)
        assert alert.features == records[alert.tx_id].features
        assert alert.latency_ms >= 0
    assert sum(1 for a in alerts.values() if a.reasons) >= 0.9 * len(alerts)
    scorer.close()
