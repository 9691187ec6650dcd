"""Reading a transaction dataset for replay: lazily, in time-ordered chunks, checked.

The file is never loaded whole. ``polars.scan_parquet`` / ``scan_csv`` build a lazy query
that renames the columns (``--map``), converts them to the contract's types, checks every
value against the event contracts, encodes the events' JSON (``streams.replay.encoding``)
and is collected by polars' streaming engine in batches of ``chunk_rows`` rows
(``LazyFrame.collect_batches``): memory is bounded by the batch size, whatever the file's.

Time order. The file must already be in transaction-time order (ties in any order), as
``fraudstream generate`` writes it; sorting a file larger than memory is a job for a
batch tool, not for a replay. Each batch is checked against the previous one, and an
unsorted file fails with the first row out of order. To put ties in ``tx_id`` order (what
the feature engines expect), the rows sharing the batch's last timestamp are held back and
joined to the next batch, so every chunk handed on holds whole timestamp groups and can be
sorted on its own.

Columns. ``FIELDS`` are the columns replay reads, named as in ``features.dataset`` (plus
the optional ``channel``, ``merchant_category`` and ``country`` of the Transaction
record). Their names and types are checked from the schema alone before any row is read;
values are checked row by row in the lazy query, and the first bad row is reported with
its number (data rows count from 1) and value. Types accepted: ids as strings or integers;
times as datetimes (naive ones are UTC) or ISO-8601 strings (``2018-04-01T00:00:31.337Z``,
an offset or none for UTC, ``T`` or a space); amounts as numbers or numeric strings, in
whole cents; ``is_fraud`` as booleans, 0/1 or true/false. CSV is read as text and parsed
with those rules, so a CSV and a Parquet file of the same rows replay the same events.

Fraud reports. A row is reported (a FraudReport is sent at ``reported_at``) when
``reported_at`` is set and, if the file has ``is_fraud``, the row is a fraud: the rule of
``features.online.stream_events``. Without ``reported_at`` no reports are sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final

import polars as pl

from features import dataset
from streams.contracts import (
    FRAUD_REPORT,
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    TRANSACTION,
    PatternRule,
)
from streams.replay import encoding

#: File formats, by suffix.
FORMATS: Final[Mapping[str, str]] = {".parquet": "Parquet", ".pq": "Parquet", ".csv": "CSV"}

#: Rows per batch handed to the sender (tens of MB encoded).
DEFAULT_CHUNK_ROWS: Final = 65_536
#: Rows per morsel of polars' streaming engine while reading (see ``Dataset.chunks``).
STREAMING_MORSEL_ROWS: Final = 10_000

CHANNEL: Final = "channel"
MERCHANT_CATEGORY: Final = "merchant_category"
COUNTRY: Final = "country"


class DatasetError(ValueError):
    """A dataset that cannot be replayed; the message is one line for the user."""


class Kind(Enum):
    """How a field's values are read and checked."""

    ID = "id"
    TIME = "time"
    AMOUNT = "amount"
    CODE = "code"
    FLAG = "flag"


@dataclass(frozen=True, slots=True)
class Field:
    """A column replay reads.

    Attributes:
        name: Its name in ``features.dataset`` (and the ``--map`` field name).
        kind: How its values are read.
        required: Whether a dataset must have it.
        pattern: For strings, the contract's regular expression.
        expected: What a value must look like, for messages.
    """

    name: str
    kind: Kind
    required: bool
    pattern: str | None = None
    expected: str = ""


def _rule(field: str) -> PatternRule:
    """The contract's pattern rule of a Transaction field (patterns live in one place)."""
    rule = TRANSACTION.rules[field]
    assert isinstance(rule, PatternRule), field
    return rule


def _string_field(name: str, kind: Kind, *, required: bool) -> Field:
    rule = _rule(name)
    return Field(name, kind, required, rule.pattern, rule.expected)


#: The columns replay reads, by field name, in the order problems are reported.
FIELDS: Final[Mapping[str, Field]] = {
    field.name: field
    for field in (
        _string_field(dataset.TX_ID, Kind.ID, required=True),
        Field(dataset.TX_TIME, Kind.TIME, required=True, expected="an ISO-8601 date-time"),
        _string_field(dataset.CUSTOMER_ID, Kind.ID, required=True),
        _string_field(dataset.TERMINAL_ID, Kind.ID, required=True),
        Field(dataset.AMOUNT, Kind.AMOUNT, required=True, expected="a number"),
        _string_field(dataset.CURRENCY, Kind.CODE, required=False),
        Field(dataset.IS_FRAUD, Kind.FLAG, required=False, expected="true/false or 1/0"),
        Field(dataset.REPORTED_AT, Kind.TIME, required=False, expected="an ISO-8601 date-time"),
        _string_field(CHANNEL, Kind.CODE, required=False),
        _string_field(MERCHANT_CATEGORY, Kind.CODE, required=False),
        _string_field(COUNTRY, Kind.CODE, required=False),
    )
}
assert all(f.required == (f.name in dataset.REQUIRED_COLUMNS) for f in FIELDS.values())
assert set(FRAUD_REPORT.rules) - {"reported_at", "schema_version"} <= set(FIELDS)

_ISO_FORMATS: Final = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f")
_TRUE_WORDS: Final = ("true", "1")
_FALSE_WORDS: Final = ("false", "0")


def parse_mappings(items: Sequence[str]) -> dict[str, str]:
    """Read ``--map FIELD=COLUMN`` options: which file column holds which field.

    Args:
        items: The option values, e.g. ``["tx_time=TX_DATETIME", "amount=TX_AMOUNT"]``.

    Returns:
        Column name by field name.

    Raises:
        DatasetError: An item is not ``FIELD=COLUMN``, names an unknown field, or maps
            a field twice.
    """
    mapping: dict[str, str] = {}
    for item in items:
        field, equals, column = item.partition("=")
        field = field.strip()
        if not equals or not field or not column:
            raise DatasetError(f"--map {item!r}: expected FIELD=COLUMN, e.g. tx_time=TX_DATETIME")
        if field not in FIELDS:
            raise DatasetError(
                f"--map {item!r}: unknown field {field!r}; fields are {', '.join(FIELDS)}"
            )
        if field in mapping:
            raise DatasetError(f"--map: field {field!r} is mapped twice")
        mapping[field] = column
    return mapping


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


@dataclass(frozen=True, slots=True)
class _Check:
    """One rule a row must pass: the field it is about and what is wrong when it fails."""

    field: str
    problem: str
    failed: pl.Expr


def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC text, for messages and summaries."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
        self.path = path
        mapping = dict(mapping or {})
        unknown = set(mapping) - set(FIELDS)
        if unknown:
            raise DatasetError(f"unknown fields mapped: {', '.join(sorted(unknown))}")
        self.format = _format(path)
        self._scan = self._open()
        try:
            schema = self._scan.collect_schema()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DatasetError(f"cannot read {path} as {self.format}: {_first_line(exc)}") from None
        if not schema:
            raise DatasetError(f"{path} is empty: no columns")
        #: Source column by field, for the fields the file has.
        self.columns: dict[str, str] = {}
        self._types: dict[str, pl.DataType] = {}
        for field in FIELDS.values():
            column = mapping.get(field.name, field.name)
            if column not in schema:
                if field.required or field.name in mapping:
                    how = "mapped" if field.name in mapping else "required"
                    raise DatasetError(
                        f"{path} has no column {column!r} ({how} for {field.name}); "
                        f"its columns are {_listing(schema.names())}"
                    )
                continue
            dtype = schema[column]
            if not _accepts(field.kind, dtype):
                raise DatasetError(
                    f"{path}: column {column!r} ({field.name}) has type {dtype}; "
                    f"expected {_accepted_types(field.kind)}"
                )
            self.columns[field.name] = column
            self._types[field.name] = dtype

    @property
    def has_reports(self) -> bool:
        """Whether the file can produce fraud reports (it has ``reported_at``)."""
        return dataset.REPORTED_AT in self.columns

    @property
    def labels_without_report_time(self) -> bool:
        """Whether the file labels frauds but says nothing of when they were reported."""
        return dataset.IS_FRAUD in self.columns and not self.has_reports

    def _open(self) -> pl.LazyFrame:
        if not self.path.exists():
            raise DatasetError(f"{self.path} does not exist")
        if not self.path.is_file():
            raise DatasetError(f"{self.path} is not a file")
        try:
            if self.format == "CSV":
                if self.path.stat().st_size == 0:
                    raise DatasetError(f"{self.path} is empty")
                return pl.scan_csv(self.path, infer_schema=False)
            return pl.scan_parquet(self.path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DatasetError(
                f"cannot read {self.path} as {self.format}: {_first_line(exc)}"
            ) from None

    # --- the lazy query ---------------------------------------------------------------

    def _source(self, field: str) -> pl.Expr:
        return pl.col(f"_src_{field}")

    def _value(self, field: str) -> pl.Expr:
        """The field converted to the contract's type (null where it cannot be)."""
        kind = FIELDS[field].kind
        dtype = self._types[field]
        raw = self._source(field)
        if kind in (Kind.ID, Kind.CODE):
            return raw if dtype == pl.String else raw.cast(pl.String)
        if kind is Kind.TIME:
            if isinstance(dtype, pl.Datetime):
                return raw.dt.epoch("ms")
            text = raw.str.strip_chars().str.replace(" ", "T", literal=True, n=1)
            parsed = [
                text.str.to_datetime(form, time_unit="ms", time_zone="UTC", strict=False)
                for form in _ISO_FORMATS
            ]
            return pl.coalesce(parsed).dt.epoch("ms")
        if kind is Kind.AMOUNT:
            if dtype == pl.String:
                return raw.str.strip_chars().cast(pl.Float64, strict=False)
            return raw.cast(pl.Float64)
        # Kind.FLAG
        if dtype == pl.Boolean:
            return raw
        # when/then rather than replace_strict, which polars 2.1 cannot stream (it read a
        # whole 1 GB CSV into memory).
        word = raw.cast(pl.String).str.strip_chars().str.to_lowercase()
        return (
            pl.when(word.is_in(_TRUE_WORDS))
            .then(pl.lit(True))
            .when(word.is_in(_FALSE_WORDS))
            .then(pl.lit(False))
            .otherwise(pl.lit(None, pl.Boolean))
        )

    def _checks(self) -> list[_Check]:
        """Every rule a row must pass, in the order problems are reported."""
        checks: list[_Check] = []
        for field in (f for f in FIELDS.values() if f.name in self.columns):
            raw, value = self._source(field.name), pl.col(field.name)
            if field.required or field.name == dataset.CURRENCY:
                checks.append(_Check(field.name, "is empty", raw.is_null()))
            if field.kind in (Kind.TIME, Kind.AMOUNT, Kind.FLAG):
                checks.append(
                    _Check(
                        field.name,
                        f"is not {field.expected}",
                        raw.is_not_null() & value.is_null(),
                    )
                )
            if field.pattern is not None:
                matches = value.str.contains(f"^(?:{field.pattern})$")
                checks.append(_Check(field.name, f"is not {field.expected}", ~matches))
            if field.kind is Kind.TIME:
                checks.append(
                    _Check(
                        field.name,
                        f"is outside {iso_ms(MIN_EPOCH_MS)[:10]}..{iso_ms(MAX_EPOCH_MS)[:10]}",
                        (value < MIN_EPOCH_MS) | (value > MAX_EPOCH_MS),
                    )
                )
            if field.kind is Kind.AMOUNT:
                checks += [
                    _Check(field.name, "is not a finite number", ~value.is_finite()),
                    _Check(field.name, "is negative", value < 0),
                    _Check(
                        field.name,
                        "is too large (at most 999999999999.99)",
                        value >= encoding.MAX_AMOUNT_EXCLUSIVE,
                    ),
                    _Check(
                        field.name,
                        "has more than two decimal places",
                        ~encoding.is_whole_cents(value),
                    ),
                ]
        if dataset.REPORTED_AT in self.columns:
            checks.append(
                _Check(
                    dataset.REPORTED_AT,
                    "is before tx_time",
                    pl.col(dataset.REPORTED_AT) < pl.col(dataset.TX_TIME),
                )
            )
        return checks

    def plan(self, window: Window, *, encode: bool) -> pl.LazyFrame:
        """The lazy query of the rows to replay, in file order.

        Columns: ``row`` (data row number from 1), ``time`` (the transaction's epoch ms),
        ``tx_id``, ``report`` (epoch ms of the row's fraud report, or null), ``problem``
        (index into ``checks`` of the row's first failed check, or null), ``send_tx`` and
        ``send_report`` (whether the transaction and the report are in the window). With
        ``encode``, also ``tx_key``, ``tx_value``, ``report_key``, ``report_value``
        (Binary; the report's null where none is sent). Rows with nothing to send are
        dropped, except rows with a problem.
        """
        sources = [pl.col(column).alias(f"_src_{field}") for field, column in self.columns.items()]
        lazy = self._scan.select(sources).with_row_index("row", offset=1)
        lazy = lazy.with_columns(self._value(field).alias(field) for field in self.columns)
        checks = self._checks()
        problem = pl.coalesce(
            [
                pl.when(check.failed.fill_null(False)).then(pl.lit(index, pl.UInt8))
                for index, check in enumerate(checks)
            ]
        )
        reported = pl.col(dataset.REPORTED_AT) if self.has_reports else pl.lit(None, pl.Int64)
        if self.has_reports and dataset.IS_FRAUD in self.columns:
            reported = pl.when(pl.col(dataset.IS_FRAUD).fill_null(False)).then(reported)
        lazy = lazy.with_columns(
            problem.alias("problem"),
            pl.col(dataset.TX_TIME).alias("time"),
            reported.alias("report"),
        ).with_columns(
            send_tx=window.contains(pl.col("time")),
            send_report=window.contains(pl.col("report")),
        )
        lazy = lazy.filter(
            pl.col("problem").is_not_null() | pl.col("send_tx") | pl.col("send_report")
        )
        keep = ["row", "time", dataset.TX_ID, "report", "problem", "send_tx", "send_report"]
        if not encode:
            return lazy.select(keep)
        optional = {
            name: pl.col(name) if name in self.columns else pl.lit(None, pl.String)
            for name in (CHANNEL, MERCHANT_CATEGORY, COUNTRY)
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
            tx_value=encoding.transaction_value(
                **ids,
                tx_time_ms=pl.col("time"),
                amount=pl.col(dataset.AMOUNT),
                currency=currency,
                **optional,
            ),
            report_key=pl.col(dataset.TERMINAL_ID).cast(pl.Binary),
            report_value=pl.when(pl.col("send_report")).then(
                encoding.fraud_report_value(
                    **ids, tx_time_ms=pl.col("time"), reported_at_ms=pl.col("report")
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
                    raise DatasetError(f"cannot read {self.path}: {_first_line(exc)}") from None
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
        bad = batch.filter(pl.col("problem").is_not_null())
        if bad.height:
            raise DatasetError(self._explain(bad["row"][0], bad["problem"][0]))
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

    def _explain(self, row: int, problem: int) -> str:
        """One line saying which row is bad, which field, what is wrong, with its value."""
        check = self._checks()[problem]
        column = self.columns[check.field]
        named = check.field if column == check.field else f"{check.field} (column {column!r})"
        try:
            value: Any = self._scan.slice(row - 1, 1).select(column).collect().item()
        except (pl.exceptions.PolarsError, ValueError):  # pragma: no cover - message only
            value = "?"
        shown = value if isinstance(value, str) else str(value)
        if isinstance(value, float) and not math.isfinite(value):
            shown = repr(value)
        return f"{self.path}: row {row}: {named} {check.problem}: {shown!r}"


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise DatasetError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; replay reads {known}"
        )
    return FORMATS[suffix]


def _listing(names: Sequence[str], most: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _accepts(kind: Kind, dtype: pl.DataType) -> bool:
    if dtype == pl.String:
        return True
    if kind is Kind.ID:
        return dtype.is_integer() or isinstance(dtype, pl.Categorical | pl.Enum)
    if kind is Kind.CODE:
        return isinstance(dtype, pl.Categorical | pl.Enum)
    if kind is Kind.TIME:
        return isinstance(dtype, pl.Datetime)
    if kind is Kind.AMOUNT:
        return dtype.is_numeric()
    return dtype == pl.Boolean or dtype.is_integer()  # Kind.FLAG


def _accepted_types(kind: Kind) -> str:
    return {
        Kind.ID: "strings or integers",
        Kind.CODE: "strings",
        Kind.TIME: "datetimes or ISO-8601 strings",
        Kind.AMOUNT: "numbers or numeric strings",
        Kind.FLAG: "booleans, 0/1 or true/false",
    }[kind]
