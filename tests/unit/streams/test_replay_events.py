"""The replayed stream's order is the feature engines' order, whatever the chunking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from features.online import stream_events
from features.simulator import SimulationConfig, simulate, write_dataset
from streams.replay.events import REPORT, TRANSACTION, StreamStats, count, merge_events
from streams.replay.reader import Dataset, Window

T0 = datetime(2018, 4, 1, tzinfo=UTC)
T0_MS = 1_522_540_800_000


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, Path]:
    frame = simulate(SimulationConfig(customers=60, terminals=120, days=30, seed=11))
    path = tmp_path_factory.mktemp("replay") / "tx.parquet"
    write_dataset(frame, path)
    return frame, path


def _stream(
    path: Path, *, chunk_rows: int, limit: int | None = None, window: Window | None = None
) -> list[tuple[int, int, str]]:
    frames = merge_events(
        Dataset(path).chunks(window or Window(), encode=True, chunk_rows=chunk_rows),
        encoded=True,
        limit=limit,
    )
    return [row for frame in frames for row in frame.select("time", "kind", "tx_id").iter_rows()]


@pytest.mark.parametrize("chunk_rows", [1, 7, 500, 100_000])
def test_the_order_is_stream_events_order(
    simulated: tuple[pl.DataFrame, Path], chunk_rows: int
) -> None:
    frame, path = simulated
    expected = [
        (e.time_ms, TRANSACTION if e.is_transaction else REPORT, e.tx_id)
        for e in stream_events(frame)
    ]
    assert int(frame["is_fraud"].sum()) > 50
    assert _stream(path, chunk_rows=chunk_rows) == expected


def test_reports_go_before_transactions_at_the_same_time_and_ties_by_tx_id(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "tx_id": ["b", "a", "c", "d"],
            "tx_time": [T0, T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=1)],
            "customer_id": ["C1", "C2", "C3", "C4"],
            "terminal_id": ["T1", "T2", "T3", "T4"],
            "amount": [1.0, 2.0, 3.0, 4.0],
            "is_fraud": [True, False, True, False],
            # b is reported at d's time; c is reported at its own time
            "reported_at": [T0 + timedelta(seconds=1), None, T0 + timedelta(seconds=1), None],
        }
    ).cast({"tx_time": pl.Datetime("ms", "UTC"), "reported_at": pl.Datetime("ms", "UTC")})
    frame.write_parquet(tmp_path / "tx.parquet")
    second = T0_MS + 1000
    for chunk_rows in (1, 2, 10):
        assert _stream(tmp_path / "tx.parquet", chunk_rows=chunk_rows) == [
            (T0_MS, TRANSACTION, "a"),
            (T0_MS, TRANSACTION, "b"),
            (second, REPORT, "b"),
            (second, REPORT, "c"),
            (second, TRANSACTION, "c"),
            (second, TRANSACTION, "d"),
        ]


@pytest.mark.parametrize("limit", [1, 100, 1_000])
def test_a_limit_cuts_after_that_many_transactions(
    simulated: tuple[pl.DataFrame, Path], limit: int
) -> None:
    _, path = simulated
    full = _stream(path, chunk_rows=64)
    cut = _stream(path, chunk_rows=64, limit=limit)
    transactions = [i for i, event in enumerate(full) if event[1] == TRANSACTION]
    assert cut == full[: transactions[limit - 1] + 1]


def test_a_limit_beyond_the_file_sends_everything(simulated: tuple[pl.DataFrame, Path]) -> None:
    _, path = simulated
    assert _stream(path, chunk_rows=64, limit=10**9) == _stream(path, chunk_rows=64)


def test_a_window_cuts_every_event_by_its_own_time(simulated: tuple[pl.DataFrame, Path]) -> None:
    _, path = simulated
    start, end = T0_MS + 10 * 86_400_000, T0_MS + 20 * 86_400_000
    full = _stream(path, chunk_rows=64)
    windowed = _stream(path, chunk_rows=64, window=Window(start, end))
    assert windowed == [event for event in full if start <= event[0] < end]
    assert any(kind == REPORT for _, kind, _ in windowed)


def test_counting_without_encoding_gives_the_sent_counts(
    simulated: tuple[pl.DataFrame, Path],
) -> None:
    frame, path = simulated
    stats = StreamStats()
    for events in merge_events(Dataset(path).chunks(Window(), encode=False), encoded=False):
        assert events.columns == ["time", "kind", "tx_id"]
        count(events, stats)
    reported = frame.filter(pl.col("is_fraud") & pl.col("reported_at").is_not_null())
    assert (stats.transactions, stats.reports) == (frame.height, reported.height)
    assert stats.events == frame.height + reported.height
    assert stats.first_ms == frame["tx_time"].dt.epoch("ms").min()
    last_tx = frame.select(pl.col("tx_time").dt.epoch("ms").max()).item()
    last_report = reported.select(pl.col("reported_at").dt.epoch("ms").max()).item()
    assert stats.last_ms == max(last_tx, last_report)
