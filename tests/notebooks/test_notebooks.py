"""Both notebooks run top to bottom on a small dataset, with a temporary registry.

They are committed without outputs (checked here too), so what a reader sees on opening
one is what running it produces; this test is what keeps them runnable. Sizes come in
through the FRAUDSTREAM_NB_* variables the notebooks' first cell reads.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from models.registry import ModelRegistry

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
SMALL = {
    "FRAUDSTREAM_NB_CUSTOMERS": "200",
    "FRAUDSTREAM_NB_TERMINALS": "400",
    "FRAUDSTREAM_NB_DAYS": "56",
    "FRAUDSTREAM_NB_SEED": "3",
    "FRAUDSTREAM_NB_FOLDS": "1",
    "FRAUDSTREAM_NB_ALERTS_PER_DAY": "5",
    # One thread: the kernel shares two cores with the test run and other work.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def read(name: str) -> Any:
    # nbformat.read has no annotations.
    return nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]


def unreachable_broker() -> str:
    """A local address no broker listens on: the notebook's promotion must not reach one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def execute(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None
) -> Any:
    for key, value in {**SMALL, **(env or {})}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FRAUDSTREAM_MODEL_REGISTRY_DIR", str(tmp_path / "registry"))
    notebook = read(name)
    # Raises CellExecutionError, with the cell and its traceback, on the first error.
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    return notebook


def test_exploration_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = execute("exploration.ipynb", tmp_path, monkeypatch)
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 4  # daily volume, scenarios, amounts and delays, features


def test_training_notebook_trains_registers_and_says_it_could_not_promote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a broker the promotion changes nothing, and says so (promoting through the
    # real broker: tests/integration/test_notebook_promotion.py).
    notebook = execute(
        "training.ipynb",
        tmp_path,
        monkeypatch,
        {"FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": unreachable_broker()},
    )
    registry = ModelRegistry(tmp_path / "registry")
    (metadata,) = registry.versions()
    assert registry.current() is None  # not written behind the workers' back
    assert metadata.threshold["objective"] == "alert_budget"
    errors = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("name") == "stderr"
    )
    assert "NOT PROMOTED: no Kafka broker answers at" in errors
    assert f"fraudstream model promote {metadata.version}" in errors


@pytest.mark.parametrize("name", ["exploration.ipynb", "training.ipynb"])
def test_notebooks_are_committed_without_outputs(name: str) -> None:
    notebook = read(name)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None
