"""The registry: layout, listing, promotion, and the current version."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models.estimators import ModelKind
from models.registry import (
    ModelMetadata,
    ModelRegistry,
    RegistryError,
    UnknownVersionError,
)

NAMES = ("A", "B")


def tiny_model() -> Pipeline:
    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
    model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression())])
    return model.fit(x, np.array([False, True, False, True]))


def register(registry: ModelRegistry, when: datetime, threshold: float = 0.5) -> ModelMetadata:
    return registry.register(
        tiny_model(),
        kind=ModelKind.LOGISTIC_REGRESSION,
        feature_names=NAMES,
        threshold={"value": threshold, "objective": "fixed"},
        metrics={"test": {"average_precision": 0.5}},
        params={"C": 1.0},
        training={"fingerprint": "sha256:x"},
        created_at=when,
    )


def test_a_version_is_a_directory_with_artifact_and_metadata(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    metadata = register(registry, datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC))
    assert metadata.version.startswith("20240501T120000Z-lr-")
    directory = tmp_path / "versions" / metadata.version
    assert sorted(p.name for p in directory.iterdir()) == ["metadata.json", "model.skops"]
    stored = json.loads((directory / "metadata.json").read_text())
    assert stored["feature_names"] == list(NAMES)
    assert stored["created_at"] == "2024-05-01T12:00:00Z"
    assert set(stored["libraries"]) >= {"python", "scikit-learn", "skops", "numpy"}
    assert len(stored["artifact_sha256"]) == 64
    assert registry.metadata(metadata.version) == metadata
    assert not [p for p in (tmp_path / "versions").iterdir() if p.name.startswith(".")]


def test_versions_are_listed_oldest_first(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    later = register(registry, datetime(2024, 5, 2, tzinfo=UTC))
    earlier = register(registry, datetime(2024, 5, 1, tzinfo=UTC))
    assert [m.version for m in registry.versions()] == [earlier.version, later.version]
    assert ModelRegistry(tmp_path / "empty").versions() == []


def test_promotion_records_current_and_history(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.current() is None
    first = register(registry, datetime(2024, 5, 1, tzinfo=UTC))
    second = register(registry, datetime(2024, 5, 2, tzinfo=UTC))
    registry.promote(first.version, NAMES)
    promotion = registry.promote(second.version, NAMES)
    assert promotion.previous == first.version
    current = registry.current()
    assert current is not None
    assert current.version == second.version
    assert [p.version for p in registry.history()] == [first.version, second.version]
    assert registry.load_current(NAMES).metadata.version == second.version


def test_promotion_refuses_a_model_the_workers_would_refuse(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    metadata = register(registry, datetime(2024, 5, 1, tzinfo=UTC))
    with pytest.raises(RegistryError, match="do not match the running feature spec"):
        registry.promote(metadata.version, ("B", "A", "C"))
    assert registry.current() is None


def test_unknown_versions_and_empty_registries_say_so(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    with pytest.raises(UnknownVersionError, match="no model version"):
        registry.metadata("20240501T120000Z-lr-0123abcd")
    with pytest.raises(UnknownVersionError, match="not a model version id"):
        registry.load("../../etc/passwd")
    with pytest.raises(RegistryError, match="no model has been promoted"):
        registry.load_current()


def test_a_threshold_outside_zero_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"in \[0, 1\]"):
        register(ModelRegistry(tmp_path), datetime(2024, 5, 1, tzinfo=UTC), threshold=1.5)
    assert not (tmp_path / "versions").exists()


def test_malformed_metadata_is_one_clear_error(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    metadata = register(registry, datetime(2024, 5, 1, tzinfo=UTC))
    (tmp_path / "versions" / metadata.version / "metadata.json").write_text("{not json")
    with pytest.raises(RegistryError, match="malformed metadata"):
        registry.metadata(metadata.version)
