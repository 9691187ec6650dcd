"""``fraudstream replay`` refuses bad input in one line, before any broker is needed."""

from __future__ import annotations

import socket
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from features.simulator import SimulationConfig, simulate, write_dataset
from streams.cli import cli

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay-cli") / "tx.parquet"
    write_dataset(simulate(SimulationConfig(customers=50, terminals=200, days=5, seed=4)), path)
    return path


def _free_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _invoke(*args: str) -> tuple[int, str, str]:
    # A port where nothing listens: a test that got past the checks fails fast and clearly.
    result = runner.invoke(
        cli, ["--bootstrap-servers", f"127.0.0.1:{_free_port()}", "replay", *args]
    )
    return result.exit_code, result.stdout, result.stderr


def _assert_one_line(stderr: str, message: str) -> None:
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("fraudstream replay: "), stderr
    assert message in stderr
    assert "Traceback" not in stderr


def _bad_files(tmp_path: Path, dataset: Path) -> dict[str, Path]:
    frame = pl.read_parquet(dataset)
    files = {
        "text": tmp_path / "tx.txt",
        "corrupt": tmp_path / "corrupt.parquet",
        "empty_csv": tmp_path / "empty.csv",
        "header_only": tmp_path / "header.csv",
        "no_rows": tmp_path / "no-rows.parquet",
        "no_amount": tmp_path / "no-amount.parquet",
        "float_ids": tmp_path / "float-ids.parquet",
        "bad_value": tmp_path / "bad-value.parquet",
    }
    files["text"].write_text("tx_id,tx_time\n")
    files["corrupt"].write_bytes(dataset.read_bytes()[: dataset.stat().st_size // 2])
    files["empty_csv"].touch()
    files["header_only"].write_text(",".join(frame.columns) + "\n")
    frame.head(0).write_parquet(files["no_rows"])
    frame.drop("amount").write_parquet(files["no_amount"])
    frame.with_columns(pl.col("tx_id").cast(pl.Float64)).write_parquet(files["float_ids"])
    frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(-1.0).otherwise(pl.col("amount")).alias("amount")
    ).write_parquet(files["bad_value"])
    return files


@pytest.mark.parametrize(
    ("file", "options", "message"),
    [
        ("missing", [], "missing.parquet does not exist"),
        ("text", [], "unsupported file type '.txt'; datasets are .parquet or .csv files"),
        ("corrupt", [], "as Parquet: "),
        ("empty_csv", [], "empty.csv is empty"),
        ("header_only", [], "nothing to replay: "),
        ("no_rows", [], "nothing to replay: "),
        ("no_amount", [], "has no column 'amount' (required for amount)"),
        ("float_ids", [], "column 'tx_id' (tx_id) has type Float64; expected strings or integers"),
        ("bad_value", [], "row 5: amount is negative: '-1.0'"),
        ("dataset", ["--map", "tx_time"], "--map 'tx_time': expected FIELD=COLUMN"),
        ("dataset", ["--map", "when=tx_time"], "unknown field 'when'"),
        ("dataset", ["--map", "amount=AMT"], "has no column 'AMT' (mapped for amount)"),
        ("dataset", ["--speed", "10", "--max"], "choose one of --speed, --rate and --max"),
        ("dataset", ["--rate", "0"], "rate must be a positive number"),
        ("dataset", ["--from", "last tuesday"], "--from must be an ISO-8601 date or date-time"),
        ("dataset", ["--from", "2018-05-01", "--to", "2018-04-01"], "is not before --to"),
        ("dataset", ["--limit", "0"], "--limit must be a positive integer, got 0"),
        ("dataset", ["--from", "2030-01-01"], "has no events from 2030-01-01T00:00:00.000Z"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    tmp_path: Path, dataset: Path, file: str, options: list[str], message: str
) -> None:
    files = _bad_files(tmp_path, dataset) | {"dataset": dataset}
    path = files.get(file, tmp_path / f"{file}.parquet")
    code, stdout, stderr = _invoke(str(path), *options)
    assert code == 2, (stdout, stderr)
    _assert_one_line(stderr, message)
    assert stdout == ""


def test_bad_rows_are_found_before_anything_is_sent_unless_unchecked(
    tmp_path: Path, dataset: Path
) -> None:
    bad = _bad_files(tmp_path, dataset)["bad_value"]
    # Unchecked, the bad row is still found before the broker is contacted (first chunk).
    code, _, stderr = _invoke(str(bad), "--no-check")
    assert code == 2
    _assert_one_line(stderr, "row 5: amount is negative")


def test_a_broker_that_is_down_gives_one_line_and_exit_1(dataset: Path) -> None:
    code, stdout, stderr = _invoke(str(dataset))
    assert code == 1, (stdout, stderr)
    _assert_one_line(stderr, "no Kafka broker answers at 127.0.0.1:")
    assert stdout == ""
