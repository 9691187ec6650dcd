"""Reading datasets for replay: columns, mapping, types, row checks, time order, chunks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from features.dataset import TRANSACTION_COLUMNS
from features.simulator import SimulationConfig, simulate, write_dataset
from streams.records import FraudReport, Transaction
from streams.replay.reader import Dataset, DatasetError, Window, parse_mappings

T0 = datetime(2018, 4, 1, tzinfo=UTC)
T0_MS = 1_522_540_800_000


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
    frame = pl.DataFrame(columns).cast({"tx_time": pl.Datetime("ms", "UTC")})
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


def _events(path: Path, mapping: dict[str, str] | None = None, **kwargs: Any) -> pl.DataFrame:
    chunks = list(Dataset(path, mapping).chunks(Window(), encode=True, **kwargs))
    return pl.concat(chunks) if chunks else pl.DataFrame()


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


def test_mapped_columns_are_read(tmp_path: Path) -> None:
    frame = _rows().rename({"tx_time": "TX_DATETIME", "customer_id": "CUSTOMER"})
    path = _write(tmp_path, frame)
    events = _events(path, {"tx_time": "TX_DATETIME", "customer_id": "CUSTOMER"})
    assert events["tx_key"].to_list() == [b"C1", b"C2", b"C1"]


# --- files and columns -----------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"tx\.parquet does not exist"):
        Dataset(tmp_path / "tx.parquet")


def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "tx.txt"
    path.write_text("tx_id\n1\n")
    with pytest.raises(DatasetError, match=r"unsupported file type '\.txt'; replay reads"):
        Dataset(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DatasetError, match=r"cannot read .*tx\.parquet as Parquet: ") as caught:
        Dataset(path)
    assert "\n" not in str(caught.value)


def test_empty_csv(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.touch()
    with pytest.raises(DatasetError, match=r"tx\.csv is empty"):
        Dataset(path)


def test_missing_required_column(tmp_path: Path) -> None:
    path = _write(tmp_path, _rows().drop("terminal_id"))
    with pytest.raises(
        DatasetError, match=r"has no column 'terminal_id' \(required for terminal_id\); its columns"
    ):
        Dataset(path)


def test_missing_mapped_column(tmp_path: Path) -> None:
    path = _write(tmp_path, _rows())
    with pytest.raises(DatasetError, match=r"has no column 'cur' \(mapped for currency\)"):
        Dataset(path, {"currency": "cur"})


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
        Dataset(path)


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    frame = _rows().select("tx_id", "tx_time", "customer_id", "terminal_id", "amount")
    events = _events(_write(tmp_path, frame))
    assert events["report"].null_count() == 3
    value = events["tx_value"][0]
    assert (
        value
        == Transaction(
            tx_id="1",
            tx_time=T0_MS,
            customer_id="C1",
            terminal_id="T1",
            amount=10.5,
            currency="EUR",
        ).dumps()
    )


def test_labels_without_report_times_give_no_reports(tmp_path: Path) -> None:
    dataset = Dataset(_write(tmp_path, _rows().drop("reported_at")))
    assert dataset.labels_without_report_time
    events = pl.concat(dataset.chunks(Window(), encode=True))
    assert not events["send_report"].any()


def test_only_frauds_are_reported(tmp_path: Path) -> None:
    frame = _rows(reported_at=[T0.replace(hour=1), T0.replace(hour=5), None])
    events = _events(_write(tmp_path, frame))
    assert events["send_report"].to_list() == [False, True, False]
    assert (
        events["report_value"][1]
        == FraudReport(
            tx_id="2",
            customer_id="C2",
            terminal_id="T2",
            tx_time=T0_MS + 1000,
            reported_at=T0_MS + 5 * 3600_000,
        ).dumps()
    )


def test_csv_and_parquet_give_the_same_events(tmp_path: Path) -> None:
    frame = simulate(SimulationConfig(customers=30, terminals=60, days=8, seed=2))
    write_dataset(frame, tmp_path / "tx.parquet")
    write_dataset(frame, tmp_path / "tx.csv")
    parquet = _events(tmp_path / "tx.parquet").drop("row")
    csv = _events(tmp_path / "tx.csv").drop("row")
    assert parquet.height == frame.height
    assert parquet.equals(csv)


def test_integer_ids_and_naive_times_are_accepted(tmp_path: Path) -> None:
    frame = _rows(tx_id=[10, 20, 30], tx_time=[t.replace(tzinfo=None) for t in _rows()["tx_time"]])
    assert frame.schema["tx_time"] == pl.Datetime("us")
    events = _events(_write(tmp_path, frame))
    assert events["tx_id"].to_list() == ["10", "20", "30"]
    assert events["time"][0] == T0_MS


@pytest.mark.parametrize(
    "text",
    [
        "2018-04-01T00:00:00Z",
        "2018-04-01T00:00:00.000Z",
        "2018-04-01 00:00:00",
        "2018-04-01T02:00:00+02:00",
    ],
)
def test_iso_times_in_text(tmp_path: Path, text: str) -> None:
    frame = _rows().with_columns(pl.Series("tx_time", [text, text, text]), reported_at=None)
    events = _events(_write(tmp_path, frame, "tx.csv"))
    assert events["time"].to_list() == [T0_MS] * 3


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
        ({"amount": [1.0, 2.0, 1e12]}, r"row 3: amount is too large"),
        ({"customer_id": ["C1", "C 2", "C3"]}, r"row 2: customer_id is not 1-64 letters.*: 'C 2'"),
        ({"tx_id": ["1", None, "3"]}, r"row 2: tx_id is empty: 'None'"),
        ({"currency": ["EUR", "eur", "EUR"]}, r"row 2: currency is not three capital letters"),
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
    tmp_path: Path, overrides: dict[str, list[Any]], message: str
) -> None:
    path = _write(tmp_path, _rows(**overrides))
    with pytest.raises(DatasetError, match=message):
        _events(path)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("tx_time", "yesterday", r"row 2: tx_time is not an ISO-8601 date-time: 'yesterday'"),
        ("amount", "12,50", r"row 2: amount is not a number: '12,50'"),
        ("is_fraud", "maybe", r"row 2: is_fraud is not true/false or 1/0: 'maybe'"),
    ],
)
def test_unparseable_text_is_named(tmp_path: Path, column: str, value: str, message: str) -> None:
    frame = _rows().cast(pl.String)
    frame = frame.with_columns(
        pl.when(pl.col("tx_id") == "2").then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )
    with pytest.raises(DatasetError, match=message):
        _events(_write(tmp_path, frame, "tx.csv"))


def test_a_mapped_column_is_named_in_problems(tmp_path: Path) -> None:
    path = _write(tmp_path, _rows(amount=[1.0, -2.0, 3.0]).rename({"amount": "AMT"}))
    with pytest.raises(DatasetError, match=r"row 2: amount \(column 'AMT'\) is negative"):
        _events(path, {"amount": "AMT"})


# --- time order and chunks -----------------------------------------------------------------


def test_an_unsorted_file_is_refused(tmp_path: Path) -> None:
    frame = _rows(tx_time=[T0.replace(second=5), T0, T0.replace(second=9)])
    with pytest.raises(
        DatasetError,
        match=r"not in time order: row 2 \(2018-04-01T00:00:00.000Z\) comes after row 1",
    ):
        _events(_write(tmp_path, frame))


def test_disorder_across_chunks_is_refused(tmp_path: Path) -> None:
    frame = _rows(tx_time=[T0, T0.replace(second=5), T0.replace(second=1)])
    with pytest.raises(DatasetError, match=r"row 3 .* comes after row 2"):
        _events(_write(tmp_path, frame), chunk_rows=1)


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 1000])
def test_chunks_hold_whole_timestamp_groups(tmp_path: Path, chunk_rows: int) -> None:
    times = [T0, T0, T0, T0.replace(second=1), T0.replace(second=1), T0.replace(second=2)] * 1
    frame = pl.DataFrame(
        {
            "tx_id": ["6", "5", "4", "3", "2", "1"],
            "tx_time": times,
            "customer_id": ["C"] * 6,
            "terminal_id": ["T"] * 6,
            "amount": [1.0] * 6,
        }
    ).cast({"tx_time": pl.Datetime("ms", "UTC")})
    chunks = list(
        Dataset(_write(tmp_path, frame)).chunks(Window(), encode=False, chunk_rows=chunk_rows)
    )
    seen: set[int] = set()
    for chunk in chunks:
        times_in_chunk = set(chunk["time"].to_list())
        assert not times_in_chunk & seen, "a timestamp was split between chunks"
        seen |= times_in_chunk
    assert pl.concat(chunks)["tx_id"].to_list() == ["6", "5", "4", "3", "2", "1"]


def test_the_window_keeps_transactions_in_it_and_reports_arriving_in_it(tmp_path: Path) -> None:
    frame = _rows(
        is_fraud=[True, True, True],
        reported_at=[T0.replace(hour=2), T0.replace(hour=5), T0.replace(hour=9)],
    )
    window = Window(start_ms=T0_MS + 1500, end_ms=T0_MS + 8 * 3600_000)
    rows = pl.concat(Dataset(_write(tmp_path, frame)).chunks(window, encode=False))
    assert rows.select("tx_id", "send_tx", "send_report").rows() == [
        ("1", False, True),  # happened before the window, reported in it
        ("2", False, True),
        ("3", True, False),  # reported after the window
    ]


def test_the_schema_is_the_simulators(tmp_path: Path) -> None:
    frame = simulate(SimulationConfig(customers=5, terminals=10, days=2, seed=1))
    assert frame.schema == pl.Schema(TRANSACTION_COLUMNS)
    write_dataset(frame, tmp_path / "tx.parquet")
    assert set(Dataset(tmp_path / "tx.parquet").columns) == {
        "tx_id",
        "tx_time",
        "customer_id",
        "terminal_id",
        "amount",
        "currency",
        "is_fraud",
        "reported_at",
    }


def test_fraud_labels_may_be_zero_or_one(tmp_path: Path) -> None:
    frame = _rows(is_fraud=[0, 1, 0], reported_at=[T0.replace(hour=1), T0.replace(hour=5), None])
    events = _events(_write(tmp_path, frame))
    assert events["send_report"].to_list() == [False, True, False]
    bad = _rows(is_fraud=[0, 2, 0])
    with pytest.raises(DatasetError, match=r"row 2: is_fraud is not true/false or 1/0: '2'"):
        _events(_write(tmp_path, bad, "bad.parquet"))
