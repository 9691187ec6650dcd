"""``fraudstream generate``: writes the dataset, refuses nonsense in one line."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from features.dataset import TRANSACTION_COLUMNS
from features.simulator import SUPPORTED_SUFFIXES
from streams.cli import cli
from streams.cli import generate as generate_module

runner = CliRunner()
TINY = ["--customers", "40", "--terminals", "80", "--days", "10", "--seed", "5"]


def test_generate_writes_parquet_and_says_what_it_wrote(tmp_path: Path) -> None:
    out = tmp_path / "data" / "tx.parquet"
    result = runner.invoke(cli, ["generate", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pl.read_parquet(out)
    assert frame.schema == pl.Schema(TRANSACTION_COLUMNS)
    assert f"wrote {frame.height} transactions to {out}" in result.output
    assert "by scenario 1:" in result.output


def test_generate_twice_with_the_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv"):
        result = runner.invoke(cli, ["generate", *TINY, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_start_date_moves_the_period(tmp_path: Path) -> None:
    out = tmp_path / "tx.parquet"
    result = runner.invoke(
        cli, ["generate", *TINY, "--start-date", "2020-02-29", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    first = pl.read_parquet(out)["tx_time"].min()
    assert str(first).startswith("2020-02-29")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--customers", "-5"], "customers must be a positive integer, got -5"),
        (["--terminals", "0"], "terminals must be a positive integer, got 0"),
        (["--days", "-1"], "days must be a positive integer"),
        (["--radius", "-2"], "radius must be a positive number"),
        (["--seed", "-1"], "seed must be a non-negative integer"),
        (["--start-date", "2018-13-01"], "start date must be YYYY-MM-DD, got '2018-13-01'"),
        (["--start-date", "yesterday"], "start date must be YYYY-MM-DD"),
        (["--start-date", "1960-01-01"], "start_date must be on or after 1980-01-01"),
        (["--out", "{tmp}/tx.json"], "unknown file extension '.json'"),
        (["--out", "{tmp}/tx"], "unknown file extension ''"),
        (["--out", "{tmp}/a-file/tx.parquet"], "is not a directory"),
        (["--out", "{tmp}"], "unknown file extension"),
        (["--out", "{tmp}/dir.parquet"], "is a directory"),
    ],
)
def test_nonsense_options_give_one_line_and_exit_2(
    tmp_path: Path, options: list[str], message: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "dir.parquet").mkdir()
    before = sorted(tmp_path.iterdir())
    args = [option.replace("{tmp}", str(tmp_path)) for option in options]
    result = runner.invoke(cli, ["generate", *TINY, *args])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1, result.output
    assert result.output.startswith("fraudstream generate: ")
    assert message in result.output
    assert "Traceback" not in result.output
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_cli_knows_the_simulator_formats() -> None:
    assert generate_module.SUPPORTED_SUFFIXES == SUPPORTED_SUFFIXES
