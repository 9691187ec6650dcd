"""Offline engine: every feature of every transaction of a dataset, for training.

Reads a polars frame with the columns of `features.dataset` and the spec
(`features.spec`), and returns the same rows with one column per feature. It computes
exactly what the online engine (`features.online`) computes for the same transactions
replayed in event-time order with their fraud reports; the parity test holds both to it.

How: rows are put in the canonical order ``(tx_time, tx_id)``; for each windowed entity
they are then stably sorted by entity (so ``(entity, tx_time, tx_id)``), and given a sort
key ``entity number * span + time`` with a span longer than the dataset plus the longest
look-back, so that windows of different entities never touch. One ``searchsorted`` over
that key finds the edges of one window for every row at once; aggregations turn edges into
values (`features.aggregations`). No Python loop runs per row, so the handbook-size dataset
(1.75 M transactions) takes seconds (bench/bench_features_offline.py).

Edges, exactly (t the row's time, d the delay, n the window):

- start: first row of the entity with time > t - d - n;
- end, d == 0: the row itself (rows of equal time and larger ``tx_id`` are after it);
- end, d > 0: last row of the entity with time <= t - d.

Fraud labels: a fraud counts for the risk of a row at time t when its transaction is in
the window and ``reported_at <= t - k``, k the risk's known delay (an hour in the spec),
as online, where the report must have arrived; the known-fraud counts take their window's
delay for k. A fraud with no ``reported_at`` is taken as reported at its transaction time
(the handbook's assumption: labels are known once the transaction is older than the
delay). A dataset without ``is_fraud`` has no known frauds.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from features import dataset
from features.aggregations import (
    Floats,
    Ints,
    OfflineHistory,
    OfflineWindow,
    StateColumn,
    TransactionAttribute,
    WindowAggregation,
    peer_fingerprint,
)
from features.spec import DEFAULT_FEATURES, Entity, Feature, FeatureSet

#: Sort keys are int64; keep a factor 2 of headroom for the sums made with them.
_MAX_KEY: Final = 2**62


def compute_features(
    transactions: pl.DataFrame, features: FeatureSet = DEFAULT_FEATURES
) -> pl.DataFrame:
    """Compute every feature for every transaction.

    Args:
        transactions: A dataset with at least `features.dataset.REQUIRED_COLUMNS`;
            ``is_fraud`` and ``reported_at`` are used for the terminal risk when present.
        features: The feature set.

    Returns:
        The input rows, sorted by ``(tx_time, tx_id)``, with ``tx_time`` as
        `features.dataset.TIMESTAMP`, and one column per feature appended in the
        feature set's order. A ``tx_id`` that occurs more than once keeps its first row
        in that order, as the live scorer counts a transaction delivered twice once
        (`features.online.DuplicateTransactionError`; live, an id is recognised within
        the customer's allowed lateness).

    Raises:
        ValueError: A required column is missing or has nulls, or ``tx_time`` is not a
            datetime.
    """
    frame = _canonical(transactions)
    time_ms = frame[dataset.TX_TIME].dt.epoch("ms").to_numpy()
    columns: dict[str, pl.Series] = {}
    for entity in features.windowed_entities:
        columns.update(_entity_features(frame, time_ms, features, entity))
    time_expr = pl.col(dataset.TX_TIME).dt.epoch("ms")
    amount_expr = pl.col(dataset.AMOUNT)
    out = frame.with_columns(
        _transaction_feature(f, time_expr, amount_expr) for f in features if f.name not in columns
    ).with_columns(columns.values())
    kept = [c for c in transactions.columns if c not in features.names]
    return out.select(*kept, *features.names)


def _transaction_feature(feature: Feature, time_ms: pl.Expr, amount: pl.Expr) -> pl.Expr:
    attribute = feature.aggregation
    assert isinstance(attribute, TransactionAttribute)  # Feature checks it
    expr = attribute.offline(time_ms, amount)
    return expr.cast(feature.dtype.polars_dtype).alias(feature.name)


def _canonical(transactions: pl.DataFrame) -> pl.DataFrame:
    """Validate, normalise types, and sort by ``(tx_time, tx_id)``."""
    missing = [c for c in dataset.REQUIRED_COLUMNS if c not in transactions.columns]
    if missing:
        raise ValueError(f"dataset lacks required columns: {missing}")
    time_type = transactions.schema[dataset.TX_TIME]
    if not isinstance(time_type, pl.Datetime):
        raise ValueError(f"{dataset.TX_TIME} must be a datetime, not {time_type}")
    casts = [_as_timestamp(dataset.TX_TIME, time_type), pl.col(dataset.AMOUNT).cast(pl.Float64)]
    if dataset.REPORTED_AT in transactions.columns:
        reported_type = transactions.schema[dataset.REPORTED_AT]
        if not isinstance(reported_type, pl.Datetime):
            raise ValueError(f"{dataset.REPORTED_AT} must be a datetime, not {reported_type}")
        casts.append(_as_timestamp(dataset.REPORTED_AT, reported_type))
    frame = transactions.with_columns(casts)
    nulls = frame.select(pl.col(c).null_count() for c in dataset.REQUIRED_COLUMNS).row(0)
    with_nulls = [c for c, k in zip(dataset.REQUIRED_COLUMNS, nulls, strict=True) if k]
    if with_nulls:
        raise ValueError(f"required columns with nulls: {with_nulls}")
    frame = frame.sort([dataset.TX_TIME, dataset.TX_ID], maintain_order=True)
    if frame[dataset.TX_ID].n_unique() != frame.height:
        frame = frame.unique(subset=[dataset.TX_ID], keep="first", maintain_order=True)
    return frame


def _as_timestamp(column: str, dtype: pl.Datetime) -> pl.Expr:
    expr = pl.col(column)
    if dtype.time_zone is None:  # naive datetimes in a dataset are UTC
        expr = expr.dt.replace_time_zone("UTC")
    return expr.cast(dataset.TIMESTAMP)


def _entity_features(
    frame: pl.DataFrame, time_ms: Ints, features: FeatureSet, entity: Entity
) -> dict[str, pl.Series]:
    """The features of one windowed entity, as series in canonical row order."""
    own = features.of(entity)
    required: set[StateColumn] = set()
    for feature in own:
        assert isinstance(feature.aggregation, WindowAggregation)  # Feature checks it
        required |= feature.aggregation.requires
    order, history = _history(frame, time_ms, entity, features.reach_ms(entity), required)
    n = frame.height
    out: dict[str, pl.Series] = {}
    windows: dict[tuple[int, int], OfflineWindow] = {}
    for feature in own:
        spec = (feature.window_ms, feature.delay_ms)
        window = windows.get(spec)
        if window is None:
            window = windows[spec] = _window(history, *spec)
        assert isinstance(feature.aggregation, WindowAggregation)
        values = feature.aggregation.offline(window)
        in_row_order: Floats = np.empty(n, dtype=np.float64)
        in_row_order[order] = values
        series = pl.Series(feature.name, in_row_order, dtype=pl.Float64)
        out[feature.name] = series.cast(feature.dtype.polars_dtype)
    return out


def _history(
    frame: pl.DataFrame, time_ms: Ints, entity: Entity, reach_ms: int, required: set[StateColumn]
) -> tuple[Ints, OfflineHistory]:
    """Sort the rows by (entity, tx_time, tx_id) and gather what aggregations need.

    Returns:
        The canonical row index of each sorted row, and the sorted history.
    """
    n = frame.height
    order = (
        frame.select(pl.arg_sort_by(entity.key_column, maintain_order=True)).to_series().to_numpy()
    ).astype(np.int64)
    keys = frame[entity.key_column].gather(order)
    segment = keys.rle_id().to_numpy().astype(np.int64)
    times = time_ms[order]
    origin = int(times.min()) if n else 0
    span = (int(times.max()) - origin if n else 0) + reach_ms + 1
    segments = int(segment[-1]) + 1 if n else 0
    if segments * span >= _MAX_KEY:
        raise ValueError("dataset too long or too many entities for 63-bit sort keys")
    key = segment * span + (times - origin)
    amount = frame[dataset.AMOUNT].to_numpy()[order]
    if StateColumn.PEER in required:
        peers = frame[entity.peer_column].gather(order)
        unique = peers.unique()
        fingerprints = pl.Series([peer_fingerprint(p) for p in unique.to_list()], dtype=pl.Int64)
        peer = peers.replace_strict(unique, fingerprints, return_dtype=pl.Int64).to_numpy()
    else:
        peer = np.zeros(n, dtype=np.int64)
    if dataset.IS_FRAUD in frame.columns:
        is_fraud = frame[dataset.IS_FRAUD].fill_null(False).to_numpy()[order].astype(np.bool_)
    else:
        is_fraud = np.zeros(n, dtype=np.bool_)
    if dataset.REPORTED_AT in frame.columns:
        reported = frame[dataset.REPORTED_AT].dt.epoch("ms").gather(order)
        known_series = pl.DataFrame({"r": reported, "t": times}).select(
            pl.col("r").fill_null(pl.col("t"))
        )
        known = known_series.to_series().to_numpy().astype(np.int64)
    else:
        known = times
    history = OfflineHistory(
        key=key,
        segment=segment,
        time_ms=times,
        amount=amount,
        peer=peer,
        is_fraud=is_fraud,
        known_ms=known,
    )
    return order, history


def _window(history: OfflineHistory, length_ms: int, delay_ms: int) -> OfflineWindow:
    """Window edges of every row (see the module docstring)."""
    key = history.key
    lo = np.searchsorted(key, key - (delay_ms + length_ms), side="right").astype(np.int64)
    if delay_ms == 0:
        hi = np.arange(1, len(key) + 1, dtype=np.int64)
    else:
        hi = np.searchsorted(key, key - delay_ms, side="right").astype(np.int64)
    return OfflineWindow(history, lo, hi, length_ms, delay_ms)
