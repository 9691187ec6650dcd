"""The features by their definitions, slowly: a reference both engines are checked against.

Quadratic, no state, no cleverness: for each transaction it filters everything processed
so far with the window's inequalities as the spec states them. Events are processed in
the order given (that is the online contract: a transaction sees what arrived before it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl

from features import dataset
from features.aggregations import (
    Amount,
    AmountToMean,
    Count,
    DistinctPeers,
    DuringNight,
    DuringWeekend,
    FraudRisk,
    KnownFrauds,
    MeanAmount,
    SecondsSincePrevious,
)
from features.spec import Entity, Feature, FeatureSet

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

#: Parity means equal to this, absolutely, for every feature of every transaction.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Tx:
    tx_id: str
    time_ms: int
    customer_id: str
    terminal_id: str
    amount: float


@dataclass(frozen=True)
class Report:
    tx_id: str
    tx_time_ms: int
    customer_id: str
    terminal_id: str
    reported_at_ms: int


def reference_features(
    events: Iterable[Tx | Report], features: FeatureSet
) -> dict[str, list[float]]:
    """Feature vectors by tx_id for a stream of events processed in the given order."""
    seen: list[Tx] = []
    reports: dict[str, Report] = {}
    out: dict[str, list[float]] = {}
    for event in events:
        if isinstance(event, Report):
            known = reports.get(event.tx_id)
            if known is None or event.reported_at_ms < known.reported_at_ms:
                reports[event.tx_id] = event  # the earliest report of a fraud counts
            continue
        seen.append(event)
        out[event.tx_id] = [_value(f, event, seen, reports) for f in features]
    return out


def _value(feature: Feature, tx: Tx, seen: list[Tx], reports: dict[str, Report]) -> float:
    agg = feature.aggregation
    t = tx.time_ms
    if isinstance(agg, Amount):
        return tx.amount
    if isinstance(agg, DuringWeekend):
        return 1.0 if (t // DAY_MS + 3) % 7 >= 5 else 0.0
    if isinstance(agg, DuringNight):
        return 1.0 if (t % DAY_MS) // HOUR_MS <= 6 else 0.0

    if feature.entity is Entity.CUSTOMER:
        key = tx.customer_id
        same = [s for s in seen if s.customer_id == key]
    else:
        key = tx.terminal_id
        same = [s for s in seen if s.terminal_id == key]
    end = t - feature.delay_ms
    start = end - feature.window_ms
    # Arrival order among equal times; `seen` is in arrival order and ends with tx.
    window = sorted(
        (s for s in same if start < s.time_ms <= end), key=lambda s: s.time_ms
    )  # stable sort: ties stay in arrival order
    count = len(window)
    mean = sum(s.amount for s in window) / count if count else 0.0
    if isinstance(agg, Count):
        return float(count)
    if isinstance(agg, MeanAmount):
        return mean
    if isinstance(agg, AmountToMean):
        return tx.amount / mean if mean > 0 else 1.0
    if isinstance(agg, SecondsSincePrevious):
        if count >= 2:
            return (window[-1].time_ms - window[-2].time_ms) / 1000
        return feature.window_ms / 1000
    if isinstance(agg, DistinctPeers):
        peers = {
            s.terminal_id if feature.entity is Entity.CUSTOMER else s.customer_id for s in window
        }
        return float(len(peers))
    if isinstance(agg, FraudRisk):
        if not count:
            return 0.0
        mine = (
            [r for r in reports.values() if r.terminal_id == key]
            if (feature.entity is Entity.TERMINAL)
            else [r for r in reports.values() if r.customer_id == key]
        )
        known_by = t - agg.known_delay_ms
        frauds = sum(
            1 for r in mine if start < r.tx_time_ms <= end and r.reported_at_ms <= known_by
        )
        return frauds / count
    if isinstance(agg, KnownFrauds):
        mine = [r for r in reports.values() if r.terminal_id == key]
        return float(
            sum(1 for r in mine if start < r.tx_time_ms <= end and r.reported_at_ms <= end)
        )
    raise NotImplementedError(type(agg).__name__)


def mismatches(offline: pl.DataFrame, online: pl.DataFrame, features: FeatureSet) -> dict[str, int]:
    """Number of transactions per feature whose two values differ by more than 1e-9."""
    assert offline.height == online.height
    joined = offline.select(dataset.TX_ID, *features.names).join(
        online, on=dataset.TX_ID, how="full", suffix="_online", coalesce=True
    )
    assert joined.height == offline.height, "both engines must cover the same transactions"
    out: dict[str, int] = {}
    for name in features.names:
        a = joined[name].cast(pl.Float64).to_numpy()
        b = joined[f"{name}_online"].cast(pl.Float64).to_numpy()
        bad = int((~(np.abs(a - b) <= TOLERANCE)).sum())  # NaN counts as a mismatch
        if bad:
            out[name] = bad
    return out
