"""``fraudstream train`` and ``fraudstream model``: register, list, show, promote; bad input."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import polars as pl
import pytest
from model_testdata import single_threaded, small_features, small_transactions
from typer.testing import CliRunner

from features.simulator import write_dataset
from models.registry import ModelRegistry
from models.source import read_dataset
from streams.cli import cli

runner = CliRunner()


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return small_features()


@pytest.fixture(scope="module")
def transactions() -> pl.DataFrame:
    return small_transactions()


_threads = pytest.fixture(autouse=True)(single_threaded)


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory: pytest.TempPathFactory, transactions: pl.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("data") / "tx.parquet"
    write_dataset(transactions, path)
    return path


def invoke(registry: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["--registry", str(registry), *args])
    return result.exit_code, result.stdout, result.stderr


def test_train_registers_a_version_and_model_commands_manage_it(
    dataset_file: Path, tmp_path: Path
) -> None:
    code, out, err = invoke(
        tmp_path, "train", "--data", str(dataset_file), "--model", "lr", "--alert-budget", "5"
    )
    assert code == 0, err
    assert "logistic regression" in out  # the handbook's row beside ours
    assert "threshold " in out
    assert "alert_budget 5" in out
    (version,) = [m.version for m in ModelRegistry(tmp_path).versions()]
    assert f"registered {version}" in out

    code, out, _ = invoke(tmp_path, "model", "list")
    assert code == 0
    assert version in out
    assert f"* {version}" not in out  # not promoted yet

    code, out, _ = invoke(tmp_path, "model", "show", version)
    assert code == 0
    shown = json.loads(out)
    assert shown["version"] == version
    assert shown["threshold"]["objective"] == "alert_budget"
    assert shown["training"]["source"]["sha256"] == read_dataset(dataset_file).sha256

    code, out, _ = invoke(tmp_path, "model", "promote", "--no-publish", version)
    assert code == 0
    assert f"promoted {version} (previous: none) in the registry only" in out
    code, out, _ = invoke(tmp_path, "model", "list")
    assert f"* {version}" in out


def test_promoting_a_handbook_feature_model_is_refused(dataset_file: Path, tmp_path: Path) -> None:
    code, _, err = invoke(
        tmp_path, "train", "--data", str(dataset_file), "--model", "lr", "--features", "handbook"
    )
    assert code == 0, err
    (version,) = [m.version for m in ModelRegistry(tmp_path).versions()]
    code, _, err = invoke(tmp_path, "model", "promote", version)
    assert code == 1
    assert err.count("\n") == 1
    assert "do not match the running feature spec" in err
    assert ModelRegistry(tmp_path).current() is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{tmp}/missing.parquet"], "missing.parquet does not exist"),
        (["--data", "{tmp}/x.json"], "unsupported file type '.json'; datasets are .parquet or"),
        (["--data", "{data}", "--model", "svm"], "unknown model kind 'svm'"),
        (["--data", "{data}", "--features", "all"], "unknown feature set 'all'"),
        (["--data", "{data}", "--train-start", "July"], "train start must be YYYY-MM-DD"),
        (["--data", "{data}", "--train-start", "2018-04-03"], "needs days the dataset"),
        (["--data", "{data}", "--threshold", "0.5", "--alert-budget", "3"], "at most one of"),
        (["--data", "{data}", "--precision-target", "1.5"], r"precision target must be in"),
        (["--data", "{data}", "--threshold", "-1"], "threshold must be in [0, 1]"),
        (["--data", "{data}", "--train-days", "0"], "train_days must be at least 1"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    dataset_file: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    filled = [a.replace("{tmp}", str(tmp_path)).replace("{data}", str(dataset_file)) for a in args]
    code, out, err = invoke(tmp_path / "registry", "train", *filled)
    assert code == 2, out + err
    assert err.count("\n") == 1, err
    assert err.startswith("fraudstream train: ")
    assert message in err
    assert "Traceback" not in out + err
    assert not (tmp_path / "registry").exists()  # nothing registered


def test_model_commands_on_unknown_versions_fail_clearly(tmp_path: Path) -> None:
    code, out, _ = invoke(tmp_path, "model", "list")
    assert code == 0
    assert "no model versions" in out
    # promote checks the version before it publishes anything: no broker is needed here
    for command, *options in (["show"], ["promote"], ["promote", "--no-publish"]):
        code, _, err = invoke(tmp_path, "model", command, *options, "20240101T000000Z-lr-00000000")
        assert code == 1
        assert err.strip() == (
            f"fraudstream model {command}: no model version "
            f"'20240101T000000Z-lr-00000000' in {tmp_path}"
        )


def test_csv_and_parquet_read_the_same_rows(transactions: pl.DataFrame, tmp_path: Path) -> None:
    write_dataset(transactions, tmp_path / "tx.csv")
    write_dataset(transactions, tmp_path / "tx.parquet")
    from_csv = read_dataset(tmp_path / "tx.csv").transactions
    from_parquet = read_dataset(tmp_path / "tx.parquet").transactions
    assert from_csv.schema == from_parquet.schema
    assert from_csv.equals(from_parquet)


def test_train_promote_without_a_broker_registers_but_changes_no_promotion(
    dataset_file: Path, tmp_path: Path
) -> None:
    # The one promotion path publishes before it records: no broker, no promotion at all,
    # never a current.json the workers would not follow.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        unreachable = f"127.0.0.1:{probe.getsockname()[1]}"
    result = runner.invoke(
        cli,
        ["--registry", str(tmp_path), "train", "--data", str(dataset_file), "--model", "lr",
         "--alert-budget", "5", "--promote"],
        env={"FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": unreachable, "FRAUDSTREAM_LOG_LEVEL": "warn"},
    )  # fmt: skip
    assert result.exit_code == 1, result.stdout + result.stderr
    (version,) = [m.version for m in ModelRegistry(tmp_path).versions()]
    assert f"registered {version}" in result.stdout
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"registered {version} but did not promote it: no Kafka broker answers" in result.stderr
    assert f"fraudstream model promote {version}" in result.stderr
    assert ModelRegistry(tmp_path).current() is None
