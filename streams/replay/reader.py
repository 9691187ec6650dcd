"""Reading a transaction dataset for replay: lazily, in time-ordered chunks, as events.

The file is read by ``features.dataset.DatasetReader``, by the rules training reads it
with (formats, ``--map`` column mapping, types, row checks: see ``features.dataset``).
Its lazy query is extended here with the event-time window and the events' JSON
(``streams.replay.encoding``) and collected by polars' streaming engine in batches of
``chunk_rows`` rows (``LazyFrame.collect_batches``): the file is never loaded whole, and
memory is bounded by the batch size, whatever the file's.

Time order. The file must already be in transaction-time order (ties in any order), as
``fraudstream generate`` writes it; sorting a file larger than memory is a job for a
batch tool, not for a replay. Each batch is checked against the previous one, and an
unsorted file fails with the first row out of order. To put ties in ``tx_id`` order (what
the feature engines expect), the rows sharing the batch's last timestamp are held back and
joined to the next batch, so every chunk handed on holds whole timestamp groups and can be
sorted on its own.

Fraud reports. A row is reported (a FraudReport is sent at ``reported_at``) when
``reported_at`` is set and, if the file has ``is_fraud``, the row is a fraud: the rule of
``features.online.stream_events``. Without ``reported_at`` no reports are sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from features import dataset
from features.dataset import DatasetError, DatasetReader, iso_ms
from streams.contracts import FRAUD_REPORT, TRANSACTION
from streams.replay import encoding

#: Rows per batch handed to the sender (tens of MB encoded).
DEFAULT_CHUNK_ROWS: Final = 65_536
#: Rows per morsel of polars' streaming engine while reading (see ``Dataset.chunks``).
STREAMING_MORSEL_ROWS: Final = 10_000

assert set(FRAUD_REPORT.rules) - {"reported_at", "schema_version"} <= set(dataset.FIELDS)


@dataclass(frozen=True, slots=True)
class Window:
    """The event-time range to replay: [start_ms, end_ms), either end open when None."""

    start_ms: int | None = None
    end_ms: int | None = None

    def contains(self, time: pl.Expr) -> pl.Expr:
        """Whether event times lie in the window (null times: false)."""
        inside = time.is_not_null()
        if self.start_ms is not None:
            inside = inside & (time >= self.start_ms)
        if self.end_ms is not None:
            inside = inside & (time < self.end_ms)
        return inside.fill_null(False)


class Dataset:
    """A dataset file opened for replay: its columns resolved and type-checked.

    Opening reads the schema only (Parquet metadata, or a CSV header): nothing is sent
    and no row is read until ``chunks`` is iterated.

    Args:
        path: A ``.parquet`` or ``.csv`` file.
        mapping: Column name by field name (``parse_mappings``); unmapped fields are read
            from the column of their own name.

    Raises:
        DatasetError: The file is missing, of an unknown format, unreadable or empty, or
            a column is missing or of a type that cannot hold its field.
    """

    def __init__(self, path: Path, mapping: Mapping[str, str] | None = None) -> None:
        self.reader = DatasetReader(path, mapping)

    @property
    def path(self) -> Path:
        """The file."""
        return self.reader.path

    @property
    def columns(self) -> dict[str, str]:
        """Source column by field, for the fields the file has."""
        return self.reader.columns

    @property
    def has_reports(self) -> bool:
        """Whether the file can produce fraud reports (it has ``reported_at``)."""
        return dataset.REPORTED_AT in self.columns

    @property
    def labels_without_report_time(self) -> bool:
        """Whether the file labels frauds but says nothing of when they were reported."""
        return dataset.IS_FRAUD in self.columns and not self.has_reports

    def plan(self, window: Window, *, encode: bool) -> pl.LazyFrame:
        """The lazy query of the rows to replay, in file order.

        Columns: ``row`` (data row number from 1), ``time`` (the transaction's epoch ms),
        ``tx_id``, ``report`` (epoch ms of the row's fraud report, or null), ``problem``
        (index into the reader's ``checks`` of the row's first failed check, or null),
        ``send_tx`` and ``send_report`` (whether the transaction and the report are in
        the window). With ``encode``, also ``tx_key``, ``tx_value``, ``report_key``,
        ``report_value`` (Binary; the report's null where none is sent). Rows with
        nothing to send are dropped, except rows with a problem.
        """
        reported = (
            pl.col(dataset.REPORTED_AT).dt.epoch("ms")
            if self.has_reports
            else pl.lit(None, pl.Int64)
        )
        if self.has_reports and dataset.IS_FRAUD in self.columns:
            reported = pl.when(pl.col(dataset.IS_FRAUD).fill_null(False)).then(reported)
        lazy = (
            self.reader.lazy()
            .with_columns(
                pl.col(dataset.TX_TIME).dt.epoch("ms").alias("time"),
                reported.alias("report"),
            )
            .with_columns(
                send_tx=window.contains(pl.col("time")),
                send_report=window.contains(pl.col("report")),
            )
        )
        lazy = lazy.filter(
            pl.col("problem").is_not_null() | pl.col("send_tx") | pl.col("send_report")
        )
        keep = ["row", "time", dataset.TX_ID, "report", "problem", "send_tx", "send_report"]
        if not encode:
            return lazy.select(keep)
        optional: dict[str, pl.Expr] = {  # an absent optional column: null, the default
            name: pl.col(name)
            for name in (dataset.CHANNEL, dataset.MERCHANT_CATEGORY, dataset.COUNTRY)
            if name in self.columns
        }
        currency = (
            pl.col(dataset.CURRENCY)
            if dataset.CURRENCY in self.columns
            else pl.lit(dataset.DEFAULT_CURRENCY)
        )
        ids = {
            "tx_id": pl.col(dataset.TX_ID),
            "customer_id": pl.col(dataset.CUSTOMER_ID),
            "terminal_id": pl.col(dataset.TERMINAL_ID),
        }
        return lazy.select(
            *keep,
            tx_key=pl.col(dataset.CUSTOMER_ID).cast(pl.Binary),
            tx_value=encoding.json_object(
                TRANSACTION,
                {
                    **ids,
                    "tx_time": pl.col("time"),
                    "amount": pl.col(dataset.AMOUNT),
                    "currency": currency,
                    **optional,
                },
            ),
            report_key=pl.col(dataset.TERMINAL_ID).cast(pl.Binary),
            report_value=pl.when(pl.col("send_report")).then(
                encoding.json_object(
                    FRAUD_REPORT,
                    {**ids, "tx_time": pl.col("time"), "reported_at": pl.col("report")},
                )
            ),
        )

    # --- iteration --------------------------------------------------------------------

    def chunks(
        self, window: Window, *, encode: bool, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[pl.DataFrame]:
        """The rows of ``plan`` in time order, in chunks of whole timestamp groups.

        Every chunk's times are later than the previous chunk's, and no timestamp is
        split between chunks. Stopping the iteration early stops reading the file.

        Raises:
            DatasetError: A row fails a check, the file is not in time order, or it
                cannot be read.
        """
        carry: pl.DataFrame | None = None
        previous: tuple[int, int] | None = None  # (row, time) of the last row seen
        # The engine reads ahead of the consumer. Its buffer is a number of morsels, so
        # the morsel size bounds the replay's memory. Measured with a slow consumer on the
        # handbook file repeated 4 and 8 times (7 M and 14 M rows), peak anonymous memory
        # of the process: Parquet about 1 GB with polars' default morsels, 300-400 MB with
        # STREAMING_MORSEL_ROWS (same speed); CSV (0.5 and 1 GB files) 650-700 MB. Both
        # stay flat as the file doubles. The setting is polars-global, so it holds while
        # this generator runs.
        with pl.Config(streaming_chunk_size=STREAMING_MORSEL_ROWS):
            batches = self.plan(window, encode=encode).collect_batches(
                chunk_size=chunk_rows, lazy=True
            )
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except pl.exceptions.PolarsError as exc:
                    raise self.reader.unreadable(exc) from None
                if batch.height == 0:
                    continue
                self._check(batch, previous)
                previous = (batch["row"][-1], batch["time"][-1])
                frame = batch if carry is None else pl.concat([carry, batch], rechunk=False)
                times = frame["time"]
                cut = int(times.search_sorted(times[-1], side="left"))
                if cut:
                    yield frame.slice(0, cut)
                carry = frame.slice(cut)
        if carry is not None and carry.height:
            yield carry

    def _check(self, batch: pl.DataFrame, previous: tuple[int, int] | None) -> None:
        """Refuse a batch with a bad row, or whose times go backwards."""
        self.reader.check(batch)
        times = batch["time"]
        if previous is not None and times[0] < previous[1]:
            self._unsorted(previous, (batch["row"][0], times[0]))
        if not times.is_sorted():
            index = int((times.diff() < 0).arg_max() or 0)
            self._unsorted(
                (batch["row"][index - 1], times[index - 1]), (batch["row"][index], times[index])
            )

    def _unsorted(self, before: tuple[int, int], after: tuple[int, int]) -> None:
        raise DatasetError(
            f"{self.path} is not in time order: row {after[0]} ({iso_ms(after[1])}) comes "
            f"after row {before[0]} ({iso_ms(before[1])}); replay needs the rows sorted by "
            "tx_time (ties in any order), e.g. "
            "pl.scan_parquet(src).sort('tx_time').sink_parquet(dst)"
        )
