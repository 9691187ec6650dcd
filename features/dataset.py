"""The transaction dataset: its columns, and the one reader of dataset files.

One table of transactions with their fraud labels, in the handbook's shape but with the
names and types of our event contracts (ids as strings, times as UTC instants with
millisecond precision, amounts in a currency). A fraud's report time is a column of the
same row: null for genuine transactions.

Training (``models.source``) and replay (``streams.replay.reader``) read dataset files
through `DatasetReader`, by one set of rules, so a file one of them accepts the other
accepts too:

- Files: ``.parquet`` or ``.csv``, what ``fraudstream generate`` writes. Opening reads the
  schema only (Parquet metadata, or a CSV header); a missing, empty or unreadable file is
  refused in one line.
- Columns: `FIELDS`, named as here (plus the optional ``channel``, ``merchant_category``
  and ``country`` of the Transaction event). A mapping (replay's ``--map FIELD=COLUMN``,
  `parse_mappings`) reads a field from a column of another name. A missing required
  column, or a column of a type that cannot hold its field, is refused before any row is
  read. Other columns are not read.
- Types: ids as strings or integers; times as datetimes (naive ones are UTC) or ISO-8601
  strings (``2018-04-01T00:00:31.337Z``, an offset or none for UTC, ``T`` or a space);
  amounts as numbers or numeric strings; ``is_fraud`` as booleans, 0/1 or true/false.
  CSV is read as text and parsed by these rules, so a CSV and a Parquet file of the same
  rows read the same.
- Values, row by row: required fields not empty; ids, codes and times as the event
  contracts check them (patterns, 1980..2099); amounts finite, not negative, in whole
  cents; ``reported_at`` not before ``tx_time``. The first bad row is reported with its
  number (data rows count from 1), its field and its value.

`DatasetReader.lazy` is the query that converts and checks the rows, for polars'
streaming engine (replay collects it in batches, so memory does not grow with the file);
`DatasetReader.read` collects it whole and refuses the file at its first bad row
(training).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final

import polars as pl

TX_ID: Final = "tx_id"
TX_TIME: Final = "tx_time"
CUSTOMER_ID: Final = "customer_id"
TERMINAL_ID: Final = "terminal_id"
AMOUNT: Final = "amount"
CURRENCY: Final = "currency"
IS_FRAUD: Final = "is_fraud"
FRAUD_SCENARIO: Final = "fraud_scenario"
REPORTED_AT: Final = "reported_at"
#: Optional fields of the Transaction event that a dataset may carry.
CHANNEL: Final = "channel"
MERCHANT_CATEGORY: Final = "merchant_category"
COUNTRY: Final = "country"

#: Millisecond UTC instants: the same precision as Kafka timestamps and our events.
TIMESTAMP: Final = pl.Datetime("ms", "UTC")

#: Column name -> polars type, in file order.
TRANSACTION_COLUMNS: Final[dict[str, pl.DataType]] = {
    TX_ID: pl.String(),
    TX_TIME: TIMESTAMP,
    CUSTOMER_ID: pl.String(),
    TERMINAL_ID: pl.String(),
    AMOUNT: pl.Float64(),  # rounded to cents
    CURRENCY: pl.String(),  # ISO 4217 code
    IS_FRAUD: pl.Boolean(),
    FRAUD_SCENARIO: pl.Int8(),  # 0 genuine, 1 amount > 220, 2 terminal, 3 customer
    REPORTED_AT: TIMESTAMP,  # null unless is_fraud
}

#: The currency of simulated transactions and of datasets that name none.
DEFAULT_CURRENCY: Final = "EUR"

#: Times must lie in [1980-01-01, 2100-01-01) UTC, as in the event contracts
#: (``streams.contracts.MIN_EPOCH_MS``, ``MAX_EPOCH_MS``; a unit test keeps them equal).
MIN_TIME_MS: Final = 315_532_800_000
MAX_TIME_MS: Final = 4_102_444_799_999
#: Amounts must be below this (at most 9,999,999.99), as in the event contracts
#: (``streams.contracts.MONEY_PATTERN``; a unit test keeps them equal): a replayed row the
#: workers would only dead-letter is refused before anything is sent.
MAX_AMOUNT_EXCLUSIVE: Final = 10_000_000

#: File formats, by suffix.
FORMATS: Final[Mapping[str, str]] = {".parquet": "Parquet", ".csv": "CSV"}


class DatasetError(ValueError):
    """A dataset file that cannot be read as transactions; the message is one line."""


class Kind(Enum):
    """How a field's values are read and checked."""

    ID = "id"
    TIME = "time"
    AMOUNT = "amount"
    CODE = "code"
    FLAG = "flag"


@dataclass(frozen=True, slots=True)
class Field:
    """A column the reader reads.

    Attributes:
        name: Its name in the dataset (and the ``--map`` field name).
        kind: How its values are read.
        required: Whether a dataset must have it.
        pattern: For strings, the regular expression a value must match in full (the
            event contract's; a unit test keeps them equal).
        expected: What a value must look like, for messages.
    """

    name: str
    kind: Kind
    required: bool
    pattern: str | None = None
    expected: str = ""


def _id_field(name: str) -> Field:
    return Field(name, Kind.ID, True, r"[A-Za-z0-9_.:-]{1,64}", "1-64 letters, digits or _.:-")


#: The fields a dataset is read as, by name, in the order problems are reported.
FIELDS: Final[Mapping[str, Field]] = {
    field.name: field
    for field in (
        _id_field(TX_ID),
        Field(TX_TIME, Kind.TIME, True, expected="an ISO-8601 date-time"),
        _id_field(CUSTOMER_ID),
        _id_field(TERMINAL_ID),
        Field(AMOUNT, Kind.AMOUNT, True, expected="a number"),
        Field(CURRENCY, Kind.CODE, False, r"[A-Z]{3}", "three capital letters"),
        Field(IS_FRAUD, Kind.FLAG, False, expected="true/false or 1/0"),
        Field(REPORTED_AT, Kind.TIME, False, expected="an ISO-8601 date-time"),
        Field(
            CHANNEL,
            Kind.CODE,
            False,
            r"[a-z][a-z0-9_]{0,31}",
            "a lower-case word of at most 32 characters",
        ),
        Field(MERCHANT_CATEGORY, Kind.CODE, False, r"[0-9]{4}", "four digits"),
        Field(COUNTRY, Kind.CODE, False, r"[A-Z]{2}", "two capital letters"),
    )
}

#: Columns a dataset must have to be read, replayed or featurised; the rest are optional.
REQUIRED_COLUMNS: Final = tuple(field.name for field in FIELDS.values() if field.required)

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


def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC text, for messages and summaries."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_whole_cents(amount: pl.Expr) -> pl.Expr:
    """Whether a float amount has at most two decimal places, as ``money()`` decides it.

    ``streams.records.money`` reads a float through its shortest repr; polars writes floats
    as the same shortest round-trip digits, so the check is on that text. (Arithmetic is no
    substitute: polars divides a column by a constant as a multiplication by its
    reciprocal, so ``round(x * 100) / 100 == x`` fails for 58.66.)
    """
    return amount.cast(pl.String).str.contains(r"^-?[0-9]+(?:\.[0-9]{1,2})?$")


@dataclass(frozen=True, slots=True)
class RowCheck:
    """One rule a row must pass: the field it is about and what is wrong when it fails.

    Attributes:
        field: The field's name.
        problem: What is wrong, for messages (``"is negative"``).
        failed: True on the rows that fail it (null counts as passed).
    """

    field: str
    problem: str
    failed: pl.Expr


class DatasetReader:
    """A dataset file opened: its columns resolved and type-checked, no row read yet.

    Opening reads the schema only (Parquet metadata, or a CSV header).

    Args:
        path: A ``.parquet`` or ``.csv`` file.
        mapping: Column name by field name (`parse_mappings`); unmapped fields are read
            from the column of their own name.

    Attributes:
        path: The file.
        format: ``"Parquet"`` or ``"CSV"``.
        columns: Source column by field name, for the fields the file has, in `FIELDS`
            order.
        checks: Every rule a row must pass, in the order problems are reported.

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
        self.checks: list[RowCheck] = self._checks()

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

    def lazy(self) -> pl.LazyFrame:
        """The file's rows, converted and checked, in file order, as a lazy query.

        Nothing is read until the query is collected; polars' streaming engine can
        collect it in batches (``LazyFrame.collect_batches``), and `check` then refuses
        a batch with a bad row.

        Columns: ``row`` (the data row's number, from 1); each field of ``columns`` under
        its field name, with the type of `TRANSACTION_COLUMNS` (String for ``channel``,
        ``merchant_category`` and ``country``), null where a value cannot be converted;
        ``problem`` (the index into ``checks`` of the row's first failed check, or null).
        """
        sources = [pl.col(column).alias(_source(field)) for field, column in self.columns.items()]
        values = [self._value(field).alias(field) for field in self.columns]
        problem = pl.coalesce(
            [
                pl.when(check.failed.fill_null(False)).then(pl.lit(index, pl.UInt8))
                for index, check in enumerate(self.checks)
            ]
        )
        return (
            self._scan.select(sources)
            .with_row_index("row", offset=1)
            .with_columns(values)
            .select("row", *self.columns, problem.alias("problem"))
        )

    def _value(self, field: str) -> pl.Expr:
        """The field converted to the dataset's type (null where it cannot be)."""
        kind = FIELDS[field].kind
        dtype = self._types[field]
        raw = pl.col(_source(field))
        if kind in (Kind.ID, Kind.CODE):
            return raw if dtype == pl.String else raw.cast(pl.String)
        if kind is Kind.TIME:
            if dtype == TIMESTAMP:
                return raw
            if isinstance(dtype, pl.Datetime):  # naive ones are UTC
                return raw.dt.epoch("ms").cast(TIMESTAMP)
            text = raw.str.strip_chars().str.replace(" ", "T", literal=True, n=1)
            parsed = [
                text.str.to_datetime(form, time_unit="ms", time_zone="UTC", strict=False)
                for form in _ISO_FORMATS
            ]
            return pl.coalesce(parsed)
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

    def _checks(self) -> list[RowCheck]:
        """Every rule a row must pass, in the order problems are reported."""
        checks: list[RowCheck] = []
        for field in (f for f in FIELDS.values() if f.name in self.columns):
            raw, value = pl.col(_source(field.name)), pl.col(field.name)
            if field.required or field.name == CURRENCY:
                checks.append(RowCheck(field.name, "is empty", raw.is_null()))
            if field.kind in (Kind.TIME, Kind.AMOUNT, Kind.FLAG):
                checks.append(
                    RowCheck(
                        field.name,
                        f"is not {field.expected}",
                        raw.is_not_null() & value.is_null(),
                    )
                )
            if field.pattern is not None:
                matches = value.str.contains(f"^(?:{field.pattern})$")
                checks.append(RowCheck(field.name, f"is not {field.expected}", ~matches))
            if field.kind is Kind.TIME:
                epoch_ms = value.dt.epoch("ms")
                checks.append(
                    RowCheck(
                        field.name,
                        f"is outside {iso_ms(MIN_TIME_MS)[:10]}..{iso_ms(MAX_TIME_MS)[:10]}",
                        (epoch_ms < MIN_TIME_MS) | (epoch_ms > MAX_TIME_MS),
                    )
                )
            if field.kind is Kind.AMOUNT:
                checks += [
                    RowCheck(field.name, "is not a finite number", ~value.is_finite()),
                    RowCheck(field.name, "is negative", value < 0),
                    RowCheck(
                        field.name,
                        "is too large (at most 9999999.99)",
                        value >= MAX_AMOUNT_EXCLUSIVE,
                    ),
                    RowCheck(
                        field.name, "has more than two decimal places", ~is_whole_cents(value)
                    ),
                ]
        if REPORTED_AT in self.columns:
            checks.append(
                RowCheck(REPORTED_AT, "is before tx_time", pl.col(REPORTED_AT) < pl.col(TX_TIME))
            )
        return checks

    # --- collected rows ---------------------------------------------------------------

    def check(self, rows: pl.DataFrame) -> None:
        """Refuse rows collected from `lazy` (all of them or a batch) with a bad row.

        Raises:
            DatasetError: Naming the first bad row, its field, what is wrong and the value.
        """
        bad = rows.filter(pl.col("problem").is_not_null())
        if bad.height:
            raise DatasetError(self._explain(bad["row"][0], bad["problem"][0]))

    def read(self) -> pl.DataFrame:
        """Read and check every row.

        Returns:
            The fields of ``columns`` under their field names, typed as in `lazy`, in
            file order.

        Raises:
            DatasetError: A row fails a check, or the file cannot be read.
        """
        try:
            rows = self.lazy().collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise self.unreadable(exc) from None
        self.check(rows)
        return rows.select(list(self.columns))

    def unreadable(self, error: BaseException) -> DatasetError:
        """The error to raise when collecting `lazy` failed with ``error`` (one line)."""
        return DatasetError(f"cannot read {self.path}: {_first_line(error)}")

    def _explain(self, row: int, problem: int) -> str:
        """One line saying which row is bad, which field, what is wrong, with its value."""
        check = self.checks[problem]
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


def _source(field: str) -> str:
    """The name of a field's column as read, before conversion."""
    return f"_src_{field}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DatasetError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; "
            f"datasets are {' or '.join(FORMATS)} files"
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
