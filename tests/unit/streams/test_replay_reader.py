"""Reading datasets for replay: events from the reader's rows, time order, chunks, windows.

The reader's own rules (files, mapping, types, row checks) are tested in
tests/unit/features/test_dataset.py; here, that replay applies them and agrees with the
event contracts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from features.dataset import (
    FIELDS,
    MAX_AMOUNT_EXCLUSIVE,
    MAX_TIME_MS,
    MIN_TIME_MS,
    TRANSACTION_COLUMNS,
    DatasetError,
)
from features.simulator import SimulationConfig, simulate, write_dataset
from streams.contracts import (
    FRAUD_REPORT,
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    TRANSACTION,
    FieldProblem,
    PatternRule,
)
from streams.records import FraudReport, Transaction
from streams.replay.reader import Dataset, Window

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


def test_mapped_columns_are_read(tmp_path: Path) -> None:
    frame = _rows().rename({"tx_time": "TX_DATETIME", "customer_id": "CUSTOMER"})
    path = _write(tmp_path, frame)
    events = _events(path, {"tx_time": "TX_DATETIME", "customer_id": "CUSTOMER"})
    assert events["tx_key"].to_list() == [b"C1", b"C2", b"C1"]


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    frame = _rows().select("tx_id", "tx_time", "customer_id", "terminal_id", "amount")
    events = _events(_write(tmp_path, frame))
    assert events["report"].null_count() == 3
    value = events["tx_value"][0]
    assert value == TRANSACTION.encode(
        Transaction(
            tx_id="1",
            tx_time=T0_MS,
            customer_id="C1",
            terminal_id="T1",
            amount=Decimal("10.50"),
            currency="EUR",
        )
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
    assert events["report_value"][1] == FRAUD_REPORT.encode(
        FraudReport(
            tx_id="2",
            customer_id="C2",
            terminal_id="T2",
            tx_time=T0_MS + 1000,
            reported_at=T0_MS + 5 * 3600_000,
        )
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


# --- bad rows and the contracts ---------------------------------------------------------------


def test_a_bad_row_stops_the_replay_with_the_readers_message(tmp_path: Path) -> None:
    path = _write(tmp_path, _rows(amount=[1.0, -2.0, 3.0]).rename({"amount": "AMT"}))
    with pytest.raises(DatasetError, match=r"row 2: amount \(column 'AMT'\) is negative"):
        _events(path, {"amount": "AMT"})


def test_the_dataset_rules_are_the_event_contracts() -> None:
    """The reader checks ids, codes, times and amounts by the rules the workers decode with."""
    for name, field in FIELDS.items():
        if field.pattern is not None:
            rule = TRANSACTION.rules[name]
            assert isinstance(rule, PatternRule), name
            assert (field.pattern, field.expected) == (rule.pattern, rule.expected), name
    assert (MIN_TIME_MS, MAX_TIME_MS) == (MIN_EPOCH_MS, MAX_EPOCH_MS)
    largest = f"{MAX_AMOUNT_EXCLUSIVE - 0.01:.2f}"
    assert TRANSACTION.rules["amount"].parse(largest) == Decimal(largest)
    with pytest.raises(FieldProblem):
        TRANSACTION.rules["amount"].parse(f"{MAX_AMOUNT_EXCLUSIVE:.2f}")
    assert set(TRANSACTION.rules) - {"schema_version"} == set(FIELDS) - {"is_fraud", "reported_at"}


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
