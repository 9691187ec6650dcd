"""The online engine run over a whole dataset, as the feature tests compare it offline."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from features import dataset
from features.online import DuplicateTransactionError, OnlineEngine, stream_events
from features.spec import DEFAULT_FEATURES, FeatureSet


def replay_online(
    transactions: pl.DataFrame,
    features: FeatureSet = DEFAULT_FEATURES,
    *,
    expire_every_ms: int | None = None,
) -> pl.DataFrame:
    """Run a dataset through the online engine as a stream (`stream_events` order).

    Args:
        transactions: A dataset with the columns of `features.dataset`.
        features: The feature set.
        expire_every_ms: When set, expire quiet entities each time the stream's event
            time passes another multiple of this (expiry must not change any value).

    Returns:
        ``tx_id`` and one column per feature, in the order the transactions were
        processed.
    """
    engine = OnlineEngine(features)
    tx_ids: list[str] = []
    rows: list[Sequence[float]] = []
    next_expiry: int | None = None
    for event in stream_events(transactions):
        if expire_every_ms is not None:
            if next_expiry is None:
                next_expiry = event.time_ms + expire_every_ms
            elif event.time_ms >= next_expiry:
                engine.expire(event.time_ms)
                next_expiry = event.time_ms + expire_every_ms
        if event.is_transaction:
            try:
                row = engine.transaction(
                    event.time_ms, event.customer_id, event.terminal_id, event.amount, event.tx_id
                )
            except DuplicateTransactionError:
                continue  # counted once, as live
            tx_ids.append(event.tx_id)
            rows.append(row)
        else:
            engine.fraud_report(
                event.tx_id, event.tx_time_ms, event.customer_id, event.terminal_id, event.time_ms
            )
    schema = {name: pl.Float64 for name in features.names}
    values = pl.DataFrame(rows, schema=schema, orient="row")
    out = values.with_columns(pl.col(f.name).cast(f.dtype.polars_dtype) for f in features)
    return out.insert_column(0, pl.Series(dataset.TX_ID, tx_ids, dtype=pl.String))
