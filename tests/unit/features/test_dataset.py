"""The one dataset reader: files, column mapping, types, row checks; eager and lazy alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from features.dataset import (
    FIELDS,
    FORMATS,
    REQUIRED_COLUMNS,
    TIMESTAMP,
    TRANSACTION_COLUMNS,
    DatasetError,
    DatasetReader,
    parse_mappings,
)
from features.simulator import SUPPORTED_SUFFIXES, SimulationConfig, simulate, write_dataset

T0 = datetime(2018, 4, 1, tzinfo=UTC)


def _rows(**overrides: list[Any]) -> pl.DataFrame:
    """Three valid rows in the dataset's schema; ``overrides`` replace whole columns."""
    columns: dict[str, list[Any]] = {
        "tx_id": ["1", "2", "3"],
        "tx_time": [T0, T0.replace(second=1), T0.replace(second=2)],
        "customer_id": ["C1", "C2", "C1"],
        "terminal_id": ["T1", "T2", "T3"],
        "amount": [10.5, 20.0, 0.99],
        "currency": ["EUR", "EUR", "USD"],
        "is_fraud": [False, True, False],
        "fraud_scenario": [0, 2, 0],
        "reported_at": [None, T0.replace(hour=5), None],
    }
    frame = pl.DataFrame(columns).cast({"tx_time": TIMESTAMP})
    return frame.with_columns(
        pl.Series(name, values, dtype=frame.schema[name] if values[0] is None else None)
        for name, values in overrides.items()
    )


def _write(tmp_path: Path, frame: pl.DataFrame, name: str = "tx.parquet") -> Path:
    path = tmp_path / name
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


def _eager(reader: DatasetReader) -> pl.DataFrame:
    return reader.read()


def _in_batches(reader: DatasetReader) -> pl.DataFrame:
    """Collected as replay collects it: streaming, in small batches, each checked."""
    batches = []
    for batch in reader.lazy().collect_batches(chunk_size=1, lazy=True):
        reader.check(batch)
        batches.append(batch)
    return pl.concat(batches).drop("row", "problem")


#: Both ways of reading rows: training's (all at once) and replay's (lazily, in batches).
READS: list[Callable[[DatasetReader], pl.DataFrame]] = [_eager, _in_batches]


@pytest.fixture(params=READS, ids=["read", "batches"])
def read(request: pytest.FixtureRequest) -> Callable[[DatasetReader], pl.DataFrame]:
    reading: Callable[[DatasetReader], pl.DataFrame] = request.param
    return reading


# --- mapping -------------------------------------------------------------------------------


def test_mappings_are_field_equals_column() -> None:
    assert parse_mappings(["tx_time=TX_DATETIME", "amount=TX AMOUNT=€"]) == {
        "tx_time": "TX_DATETIME",
        "amount": "TX AMOUNT=€",
    }


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("tx_time", "expected FIELD=COLUMN"),
        ("=TX_DATETIME", "expected FIELD=COLUMN"),
        ("tx_time=", "expected FIELD=COLUMN"),
        ("when=TX_DATETIME", "unknown field 'when'; fields are tx_id, tx_time"),
        ("fraud_scenario=x", "unknown field 'fraud_scenario'"),
    ],
)
def test_bad_mappings_are_refused(item: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_mappings([item])


def test_a_field_mapped_twice_is_refused() -> None:
    with pytest.raises(DatasetError, match="'amount' is mapped twice"):
        parse_mappings(["amount=a", "amount=b"])


def test_mapped_columns_are_read_under_their_field_names(
    tmp_path: Path, read: Callable[[DatasetReader], pl.DataFrame]
) -> None:
    frame = _rows().rename({"tx_time": "TX_DATETIME", "customer_id": "CUSTOMER"})
    path = _write(tmp_path, frame)
    rows = read(DatasetReader(path, {"tx_time": "TX_DATETIME", "customer_id": "CUSTOMER"}))
    assert rows["customer_id"].to_list() == ["C1", "C2", "C1"]
    assert rows["tx_time"].to_list() == _rows()["tx_time"].to_list()


# --- files and columns -----------------------------------------------------------------------


def test_the_formats_are_what_the_simulator_writes() -> None:
    assert set(FORMATS) == set(SUPPORTED_SUFFIXES)


def test_the_required_columns_are_the_required_fields() -> None:
    assert REQUIRED_COLUMNS == ("tx_id", "tx_time", "customer_id", "terminal_id", "amount")
    assert all(field.required == (name in REQUIRED_COLUMNS) for name, field in FIELDS.items())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"tx\.parquet does not exist"):
        DatasetReader(tmp_path / "tx.parquet")


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "tx.csv").mkdir()
    with pytest.raises(DatasetError, match=r"tx\.csv is not a file"):
        DatasetReader(tmp_path / "tx.csv")


@pytest.mark.parametrize("name", ["tx.txt", "tx.json", "tx.pq", "tx"])
def test_unknown_format(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("tx_id\n1\n")
    with pytest.raises(DatasetError, match=r"unsupported file type .*; datasets are \.parquet"):
        DatasetReader(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DatasetError, match=r"cannot read .*tx\.parquet as Parquet: ") as caught:
        DatasetReader(path)
    assert "\n" not in str(caught.value)


def test_empty_csv(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.touch()
    with pytest.raises(DatasetError, match=r"tx\.csv is empty"):
        DatasetReader(path)


def test_missing_required_column(tmp_path: Path) -> None:
    path = _write(tmp_path, _rows().drop("terminal_id"))
    with pytest.raises(
        DatasetError, match=r"has no column 'terminal_id' \(required for terminal_id\); its columns"
    ):
        DatasetReader(path)


def test_missing_mapped_column(tmp_path: Path) -> None:
    path = _write(tmp_path, _rows())
    with pytest.raises(DatasetError, match=r"has no column 'cur' \(mapped for currency\)"):
        DatasetReader(path, {"currency": "cur"})


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("tx_id", [1.5, 2.5, 3.5], r"column 'tx_id' \(tx_id\) has type Float64; expected strings"),
        ("tx_time", [1, 2, 3], r"column 'tx_time' \(tx_time\) has type Int64; expected datetimes"),
        ("amount", [True, False, True], r"'amount' \(amount\) has type Boolean; expected numbers"),
        ("is_fraud", [0.5, 1.0, 0.0], r"'is_fraud' \(is_fraud\) has type Float64; expected bool"),
    ],
)
def test_mistyped_column(tmp_path: Path, column: str, values: list[Any], message: str) -> None:
    path = _write(tmp_path, _rows(**{column: values}))
    with pytest.raises(DatasetError, match=message):
        DatasetReader(path)


# --- types -----------------------------------------------------------------------------------


def test_rows_come_typed_as_the_dataset_and_other_columns_are_not_read(
    tmp_path: Path, read: Callable[[DatasetReader], pl.DataFrame]
) -> None:
    rows = read(DatasetReader(_write(tmp_path, _rows())))
    expected = {name: dtype for name, dtype in TRANSACTION_COLUMNS.items() if name in FIELDS}
    assert rows.schema == pl.Schema(expected)  # fraud_scenario is not a field
    assert rows.equals(_rows().drop("fraud_scenario"))


def test_csv_and_parquet_read_the_same(
    tmp_path: Path, read: Callable[[DatasetReader], pl.DataFrame]
) -> None:
    frame = simulate(SimulationConfig(customers=30, terminals=60, days=8, seed=2))
    write_dataset(frame, tmp_path / "tx.parquet")
    write_dataset(frame, tmp_path / "tx.csv")
    parquet = read(DatasetReader(tmp_path / "tx.parquet"))
    csv = read(DatasetReader(tmp_path / "tx.csv"))
    assert parquet.height == frame.height
    assert parquet.equals(csv)
    assert parquet.equals(frame.drop("fraud_scenario"))


def test_integer_ids_and_naive_times_are_accepted(
    tmp_path: Path, read: Callable[[DatasetReader], pl.DataFrame]
) -> None:
    frame = _rows(tx_id=[10, 20, 30], tx_time=[t.replace(tzinfo=None) for t in _rows()["tx_time"]])
    assert frame.schema["tx_time"] == pl.Datetime("us")
    rows = read(DatasetReader(_write(tmp_path, frame)))
    assert rows["tx_id"].to_list() == ["10", "20", "30"]
    assert rows["tx_time"].to_list() == _rows()["tx_time"].to_list()


@pytest.mark.parametrize(
    "text",
    [
        "2018-04-01T00:00:00Z",
        "2018-04-01T00:00:00.000Z",
        "2018-04-01 00:00:00",
        "2018-04-01T02:00:00+02:00",
    ],
)
def test_iso_times_in_text(
    tmp_path: Path, text: str, read: Callable[[DatasetReader], pl.DataFrame]
) -> None:
    frame = _rows().with_columns(pl.Series("tx_time", [text, text, text]), reported_at=None)
    rows = read(DatasetReader(_write(tmp_path, frame, "tx.csv")))
    assert rows["tx_time"].to_list() == [T0] * 3


def test_fraud_labels_may_be_zero_or_one(
    tmp_path: Path, read: Callable[[DatasetReader], pl.DataFrame]
) -> None:
    path = _write(tmp_path, _rows(is_fraud=[0, 1, 0]))
    assert read(DatasetReader(path))["is_fraud"].to_list() == [False, True, False]


# --- bad rows ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"amount": [1.0, -2.0, 3.0]}, r"row 2: amount is negative: '-2\.0'"),
        (
            {"amount": [1.0, 2.0, 3.001]},
            r"row 3: amount has more than two decimal places: '3\.001'",
        ),
        ({"amount": [1.0, float("nan"), 3.0]}, r"row 2: amount is not a finite number: 'nan'"),
        ({"amount": [1.0, 2.0, 1e7]}, r"row 3: amount is too large \(at most 9999999\.99\)"),
        ({"customer_id": ["C1", "C 2", "C3"]}, r"row 2: customer_id is not 1-64 letters.*: 'C 2'"),
        ({"tx_id": ["1", None, "3"]}, r"row 2: tx_id is empty: 'None'"),
        ({"terminal_id": ["T1", "T2", None]}, r"row 3: terminal_id is empty: 'None'"),
        ({"currency": ["EUR", "eur", "EUR"]}, r"row 2: currency is not three capital letters"),
        ({"is_fraud": [0, 2, 0]}, r"row 2: is_fraud is not true/false or 1/0: '2'"),
        (
            {"reported_at": [None, T0, None]},
            r"row 2: reported_at is before tx_time: '2018-04-01 00:00:00\+00:00'",
        ),
        (
            {"tx_time": [T0.replace(year=1970)] * 3},
            r"row 1: tx_time is outside 1980-01-01\.\.2099-12-31",
        ),
    ],
)
def test_the_first_bad_row_is_named(
    tmp_path: Path,
    overrides: dict[str, list[Any]],
    message: str,
    read: Callable[[DatasetReader], pl.DataFrame],
) -> None:
    reader = DatasetReader(_write(tmp_path, _rows(**overrides)))
    with pytest.raises(DatasetError, match=message) as caught:
        read(reader)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("tx_time", "yesterday", r"row 2: tx_time is not an ISO-8601 date-time: 'yesterday'"),
        ("amount", "12,50", r"row 2: amount is not a number: '12,50'"),
        ("is_fraud", "maybe", r"row 2: is_fraud is not true/false or 1/0: 'maybe'"),
    ],
)
def test_unparseable_text_is_named(
    tmp_path: Path,
    column: str,
    value: str,
    message: str,
    read: Callable[[DatasetReader], pl.DataFrame],
) -> None:
    frame = _rows().cast(pl.String)
    frame = frame.with_columns(
        pl.when(pl.col("tx_id") == "2").then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )
    with pytest.raises(DatasetError, match=message):
        read(DatasetReader(_write(tmp_path, frame, "tx.csv")))


def test_a_mapped_column_is_named_in_problems(
    tmp_path: Path, read: Callable[[DatasetReader], pl.DataFrame]
) -> None:
    path = _write(tmp_path, _rows(amount=[1.0, -2.0, 3.0]).rename({"amount": "AMT"}))
    with pytest.raises(DatasetError, match=r"row 2: amount \(column 'AMT'\) is negative"):
        read(DatasetReader(path, {"amount": "AMT"}))
