"""The replay's event stream: transactions and their fraud reports, merged in event time.

Pure: chunks of rows in, ordered event frames out; no file, no Kafka, no clock.

Order (what ``features.online`` expects, and ``features.online.stream_events`` defines):
by event time (a transaction's ``tx_time``, a report's ``reported_at``); at equal times,
reports before transactions, then by ``tx_id``. The Kafka producer sends the frames in
this order, so every partition receives its events in it too.

Merging without a global sort. The rows arrive in transaction-time order, in chunks of
whole timestamp groups (``streams.replay.reader``). A report is never earlier than its
transaction, so when a chunk ending at time T has been read, every report due at or
before T is known: it belongs to a transaction already read. Reports not yet due wait in
a small pending frame (their size is the number of frauds reported within the reporting
delay: about 600 for the handbook's 7 days), so memory stays bounded by the chunk size
plus that backlog. Each chunk's transactions and due reports are sorted together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import polars as pl

#: Event kinds, in the order equal times are sent.
REPORT: Final = 0
TRANSACTION: Final = 1

_ORDER: Final = ["time", "kind", "tx_id"]


@dataclass(slots=True)
class StreamStats:
    """What an event stream contained, as it went.

    Attributes:
        transactions: Transactions sent.
        reports: Fraud reports sent.
        first_ms: Event time of the first event, if any.
        last_ms: Event time of the last event, if any.
    """

    transactions: int = 0
    reports: int = 0
    first_ms: int | None = None
    last_ms: int | None = None

    @property
    def events(self) -> int:
        """Events of both kinds."""
        return self.transactions + self.reports


def _columns(encoded: bool) -> list[str]:
    return [*_ORDER, "key", "value"] if encoded else list(_ORDER)


def merge_events(
    chunks: Iterable[pl.DataFrame], *, encoded: bool, limit: int | None = None
) -> Iterator[pl.DataFrame]:
    """The events of a dataset in send order, one frame per chunk of rows.

    Args:
        chunks: Rows from ``Dataset.chunks``: time-ordered, whole timestamp groups, with
            ``time``, ``tx_id``, ``report``, ``send_tx``, ``send_report`` and, when
            ``encoded``, ``tx_key``, ``tx_value``, ``report_key``, ``report_value``.
        encoded: Whether to carry the keys and values.
        limit: Stop after this many transactions (the reports due before the last one
            included); None for no limit.

    Yields:
        Frames with ``time``, ``kind`` (``REPORT`` or ``TRANSACTION``), ``tx_id`` and,
        when ``encoded``, ``key`` and ``value``; never empty.
    """
    columns = _columns(encoded)
    pending = _empty(encoded)
    remaining = limit
    for chunk in chunks:
        transactions = chunk.filter(pl.col("send_tx")).select(_transactions(encoded))
        reports = chunk.filter(pl.col("send_report")).select(_reports(encoded))
        if reports.height:
            pending = pl.concat([pending, reports])
        cutoff = chunk["time"][-1]
        due = pending.filter(pl.col("time") <= cutoff)
        if due.height:
            pending = pending.filter(pl.col("time") > cutoff)
        events = pl.concat([transactions, due]).sort(_ORDER).select(columns)
        if remaining is not None:
            events, remaining = _cut(events, remaining)
        if events.height:
            yield events
        if remaining == 0:
            return
    if pending.height:
        yield pending.sort(_ORDER).select(columns)


def _transactions(encoded: bool) -> list[pl.Expr]:
    exprs = [pl.col("time"), pl.lit(TRANSACTION, pl.UInt8).alias("kind"), pl.col("tx_id")]
    if encoded:
        exprs += [pl.col("tx_key").alias("key"), pl.col("tx_value").alias("value")]
    return exprs


def _reports(encoded: bool) -> list[pl.Expr]:
    exprs = [
        pl.col("report").alias("time"),
        pl.lit(REPORT, pl.UInt8).alias("kind"),
        pl.col("tx_id"),
    ]
    if encoded:
        exprs += [pl.col("report_key").alias("key"), pl.col("report_value").alias("value")]
    return exprs


def _empty(encoded: bool) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {"time": pl.Int64(), "kind": pl.UInt8(), "tx_id": pl.String()}
    if encoded:
        schema |= {"key": pl.Binary(), "value": pl.Binary()}
    return pl.DataFrame(schema=schema)


def _cut(events: pl.DataFrame, remaining: int) -> tuple[pl.DataFrame, int]:
    """Keep events up to and including the ``remaining``-th transaction."""
    is_transaction = events["kind"] == TRANSACTION
    count = int(is_transaction.sum())
    if count < remaining:
        return events, remaining - count
    position = int(is_transaction.cum_sum().search_sorted(remaining, side="left"))
    return events.slice(0, position + 1), 0


def count(frame: pl.DataFrame, stats: StreamStats) -> None:
    """Add a frame of events to the stream's statistics."""
    transactions = int((frame["kind"] == TRANSACTION).sum())
    stats.transactions += transactions
    stats.reports += frame.height - transactions
    if stats.first_ms is None:
        stats.first_ms = frame["time"][0]
    stats.last_ms = frame["time"][-1]
