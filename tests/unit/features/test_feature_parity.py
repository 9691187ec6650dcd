"""Parity: the offline and the online engine give every transaction the same features.

The contract behind "no training/serving skew": one dataset, the offline engine over the
whole frame, the online engine fed its transactions and fraud reports as one stream in
event-time order, and every feature of every transaction equal to 1e-9. Property tests
add a third opinion, the slow reference (feature_reference.py), on small streams built to
sit on window edges.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from feature_reference import Report, Tx, mismatches, reference_features
from feature_testdata import DAY_MS, HOUR_MS, generate_transactions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from online_replay import replay_online

import features.offline as offline_module
from features import dataset
from features.aggregations import FraudRisk, OfflineWindow
from features.offline import compute_features
from features.online import stream_events
from features.simulator import SimulationConfig, simulate
from features.spec import (
    CUSTOMER_POLICY,
    DEFAULT_FEATURES,
    TERMINAL_POLICY,
    Entity,
    Feature,
    FeatureSet,
)


@pytest.fixture(scope="module")
def generated() -> pl.DataFrame:
    return generate_transactions(customers=300, terminals=200, days=100, seed=7)


@pytest.fixture(scope="module")
def offline_features(generated: pl.DataFrame) -> pl.DataFrame:
    return compute_features(generated)


def test_the_generated_dataset_exercises_every_window(
    generated: pl.DataFrame, offline_features: pl.DataFrame
) -> None:
    f = offline_features
    assert 20_000 <= generated.height <= 60_000
    # Ties, late reports, window edges hit exactly and quiet customers are all present.
    assert generated.group_by(dataset.CUSTOMER_ID, dataset.TX_TIME).len()["len"].max() > 1  # type: ignore[operator]
    delay = (pl.col(dataset.REPORTED_AT) - pl.col(dataset.TX_TIME)).dt.total_milliseconds()
    assert generated.filter(delay > 7 * DAY_MS).height > 10
    assert generated.filter(delay == 7 * DAY_MS).height > 10
    assert generated.filter(delay == 7 * DAY_MS - HOUR_MS).height > 10  # reports on the risk's edge
    assert generated.filter(delay == 7 * DAY_MS - HOUR_MS + 1).height > 10
    t = generated.select(dataset.CUSTOMER_ID, dataset.TERMINAL_ID, dataset.TX_TIME)
    for entity in (dataset.CUSTOMER_ID, dataset.TERMINAL_ID):
        for days in (1, 7, 8, 14, 30, 37):  # every window edge, hit exactly
            later = t.with_columns(pl.col(dataset.TX_TIME) + pl.duration(days=days))
            assert later.join(t, on=[entity, dataset.TX_TIME]).height > 0, (entity, days)
    gaps = t.sort(dataset.CUSTOMER_ID, dataset.TX_TIME).select(
        pl.col(dataset.TX_TIME).diff().over(dataset.CUSTOMER_ID).dt.total_days()
    )
    assert gaps.filter(pl.col(dataset.TX_TIME) > 31).height > 0  # quiet for longer than kept
    for days in (1, 7, 30):
        assert f[f"TERMINAL_ID_NB_TX_{days}DAY_WINDOW"].max() > 0  # type: ignore[operator]
        assert f[f"TERMINAL_ID_RISK_{days}DAY_WINDOW"].max() > 0  # type: ignore[operator]
        assert f[f"CUSTOMER_ID_NB_TX_{days}DAY_WINDOW"].max() > 3  # type: ignore[operator]


def test_offline_and_online_agree_on_every_feature_of_every_transaction(
    generated: pl.DataFrame, offline_features: pl.DataFrame
) -> None:
    online = replay_online(generated, expire_every_ms=DAY_MS)
    assert mismatches(offline_features, online, DEFAULT_FEATURES) == {}


def test_transactions_delivered_twice_count_once_in_both_engines(
    generated: pl.DataFrame, offline_features: pl.DataFrame
) -> None:
    """A producer's retry repeats rows: identical, or the same id with another amount."""
    sample = generated.sample(n=400, seed=3)
    repeated = sample.head(300)
    reused = sample.tail(100).with_columns(pl.col(dataset.AMOUNT) + 1)
    doubled = pl.concat([generated, repeated, reused])
    offline = compute_features(doubled)
    assert offline.height == generated.height
    assert mismatches(offline_features, offline, DEFAULT_FEATURES) == {}
    online = replay_online(doubled, expire_every_ms=DAY_MS)
    assert mismatches(offline, online, DEFAULT_FEATURES) == {}


def test_the_parity_check_catches_a_window_edge_moved_by_one_millisecond(
    generated: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test above would be worthless if a 1 ms skew passed it."""
    original: Callable[..., OfflineWindow] = offline_module._window

    def shifted(history: object, length_ms: int, delay_ms: int) -> OfflineWindow:
        return original(history, length_ms + 1, delay_ms)

    monkeypatch.setattr(offline_module, "_window", shifted)
    online = replay_online(generated)
    bad = mismatches(compute_features(generated), online, DEFAULT_FEATURES)
    assert "CUSTOMER_ID_NB_TX_1DAY_WINDOW" in bad
    assert "TERMINAL_ID_NB_TX_1DAY_WINDOW" in bad


# --- properties: small streams on window edges --------------------------------------------

_EDGES = [
    d * DAY_MS + e for d in (0, 1, 7, 8, 14, 30, 37, 38) for e in (-1, 0, 1) if d * DAY_MS + e >= 0
]
_START_MS = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000)
#: Report delays around the last one a read exactly 7 days later counts (an hour old).
_RISK_EDGES = [7 * DAY_MS - HOUR_MS + e for e in (-1, 0, 1)]


@st.composite
def edge_streams(draw: st.DrawFn) -> pl.DataFrame:
    """Transactions whose gaps are window lengths, 1 ms off, zero (ties) or long pauses."""
    n = draw(st.integers(1, 28))
    gaps = draw(
        st.lists(
            st.one_of(
                st.sampled_from(_EDGES),
                st.just(0),  # equal timestamps and bursts
                st.integers(0, 3 * DAY_MS),
                st.sampled_from([45 * DAY_MS, 90 * DAY_MS]),  # longer than any retention
            ),
            min_size=n,
            max_size=n,
        )
    )
    times = np.cumsum(gaps) + _START_MS
    # Echoes: some transactions repeated exactly one window edge later.
    echo_of = draw(st.lists(st.integers(0, n - 1), max_size=6))
    echo_by = draw(st.lists(st.sampled_from(_EDGES), min_size=len(echo_of), max_size=len(echo_of)))
    customers = draw(st.lists(st.sampled_from(["C1", "C2"]), min_size=n, max_size=n))
    terminals = draw(st.lists(st.sampled_from(["T1", "T2", "T3"]), min_size=n, max_size=n))
    rows = [(int(times[i]), customers[i], terminals[i]) for i in range(n)]
    rows += [
        (rows[i][0] + by, rows[i][1], rows[i][2]) for i, by in zip(echo_of, echo_by, strict=True)
    ]
    m = len(rows)
    cents = draw(st.lists(st.integers(0, 100_000), min_size=m, max_size=m))
    fraud = draw(st.lists(st.booleans(), min_size=m, max_size=m))
    delays = draw(
        st.lists(
            st.sampled_from(
                [
                    0,
                    1,
                    HOUR_MS,
                    *_RISK_EDGES,
                    7 * DAY_MS - 1,
                    7 * DAY_MS,
                    7 * DAY_MS + 1,
                    12 * DAY_MS,
                ]
            ),
            min_size=m,
            max_size=m,
        )
    )
    ids = draw(st.permutations(range(m)))  # ids unrelated to time: ties sort by id
    frame = pl.DataFrame(
        {
            dataset.TX_ID: [f"X{k:03d}" for k in ids],
            dataset.TX_TIME: [r[0] for r in rows],
            dataset.CUSTOMER_ID: [r[1] for r in rows],
            dataset.TERMINAL_ID: [r[2] for r in rows],
            dataset.AMOUNT: [c / 100 for c in cents],
            dataset.IS_FRAUD: fraud,
            dataset.REPORTED_AT: [
                r[0] + d if f else None for r, d, f in zip(rows, delays, fraud, strict=True)
            ],
        }
    )
    return frame.with_columns(
        pl.col(dataset.TX_TIME).cast(dataset.TIMESTAMP),
        pl.col(dataset.REPORTED_AT).cast(dataset.TIMESTAMP),
    )


def reference_frame(frame: pl.DataFrame, features: FeatureSet) -> pl.DataFrame:
    events: list[Tx | Report] = []
    for e in stream_events(frame):
        if e.is_transaction:
            events.append(Tx(e.tx_id, e.tx_time_ms, e.customer_id, e.terminal_id, e.amount))
        else:
            events.append(Report(e.tx_id, e.tx_time_ms, e.customer_id, e.terminal_id, e.time_ms))
    values = reference_features(events, features)
    return pl.DataFrame(
        {
            dataset.TX_ID: list(values),
            **{n: [v[i] for v in values.values()] for i, n in enumerate(features.names)},
        }
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edge_streams())
def test_both_engines_equal_the_definitions_on_window_edges(frame: pl.DataFrame) -> None:
    offline = compute_features(frame)
    online = replay_online(frame, expire_every_ms=DAY_MS)
    reference = reference_frame(frame, DEFAULT_FEATURES)
    assert mismatches(offline, reference, DEFAULT_FEATURES) == {}
    assert mismatches(offline, online, DEFAULT_FEATURES) == {}


def _risks(*known_delays: timedelta) -> FeatureSet:
    """Risks of terminals and customers with the given known delays."""
    features = [
        Feature(
            f"{entity.name}_RISK_{window}D_AFTER_{delay}D_KNOWN_{known // timedelta(hours=1)}H",
            entity,
            FraudRisk(known),
            timedelta(days=window),
            timedelta(days=delay),
        )
        for known in known_delays
        for entity in (Entity.TERMINAL, Entity.CUSTOMER)
        for window, delay in ((1, 7), (7, 0))
    ]
    return FeatureSet(
        tuple(features), {Entity.TERMINAL: TERMINAL_POLICY, Entity.CUSTOMER: CUSTOMER_POLICY}
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edge_streams())
def test_risks_with_any_known_delay_equal_the_definitions(frame: pl.DataFrame) -> None:
    features = _risks(timedelta(0), timedelta(hours=1), timedelta(days=7))
    offline = compute_features(frame, features)
    online = replay_online(frame, features, expire_every_ms=DAY_MS)
    reference = reference_frame(frame, features)
    assert mismatches(offline, reference, features) == {}
    assert mismatches(offline, online, features) == {}


def test_parity_holds_on_the_simulator_output_too() -> None:
    """The simulator's data (handbook-like, reports within 7 days) through both engines."""
    data = simulate(SimulationConfig(customers=150, terminals=300, days=60, seed=3))
    assert data.height > 10_000
    assert data[dataset.IS_FRAUD].sum() > 0
    online = replay_online(data, expire_every_ms=DAY_MS)
    assert mismatches(compute_features(data), online, DEFAULT_FEATURES) == {}
