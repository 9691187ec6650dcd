"""The training notebook promotes through the one promotion path, with the real broker.

Its promotion is published on the model-control topic (what a starting worker loads)
and recorded in the registry (what ``model list`` shows): the two agree.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from features.spec import DEFAULT_FEATURES
from models.registry import LoadedModel, ModelRegistry
from streams.kafka import ensure_topics, product_topics
from streams.modelcontrol import ModelFollower
from streams.settings import Settings

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "training.ipynb"
SMALL = {
    "FRAUDSTREAM_NB_CUSTOMERS": "200",
    "FRAUDSTREAM_NB_TERMINALS": "400",
    "FRAUDSTREAM_NB_DAYS": "56",
    "FRAUDSTREAM_NB_SEED": "3",
    "FRAUDSTREAM_NB_FOLDS": "1",
    "FRAUDSTREAM_NB_ALERTS_PER_DAY": "5",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def test_the_training_notebook_publishes_its_promotion_to_the_workers(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"model_registry_dir": tmp_path / "registry"})
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    for key, value in {**SMALL, **settings.as_env()}.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()

    registry = ModelRegistry(settings.model_registry_dir)
    (metadata,) = registry.versions()
    current = registry.current()
    assert current is not None
    assert current.version == metadata.version

    loaded: list[LoadedModel] = []
    follower = ModelFollower(settings, DEFAULT_FEATURES.names, loaded.append)
    asyncio.run(follower.load_initial())  # what a worker starting now runs
    assert [m.metadata.version for m in loaded] == [metadata.version]
    assert follower.fallback is None
