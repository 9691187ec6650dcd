"""A check suite every model kind we ship must pass (in the spirit of river's checks).

Deterministic with a seed, scores in [0, 1], saved and loaded without untrusted types and
with the same scores, feature order enforced, tampered artifacts refused, one
predict_proba per batch, single-threaded scoring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import skops.io
from model_testdata import single_threaded, small_features, small_transactions
from threadpoolctl import threadpool_info

from features.spec import DEFAULT_FEATURES
from models.estimators import BASELINE_PARAMS, ModelKind, feature_matrix, fit, fraud_labels
from models.protocol import latest_train_start, split
from models.registry import (
    TRUSTED_TYPES,
    ArtifactIntegrityError,
    FeatureMismatchError,
    ModelRegistry,
    UntrustedArtifactError,
)
from models.scoring import BatchScorer

NAMES = DEFAULT_FEATURES.names
#: Small versions of the baselines, so the suite stays fast.
FAST: dict[ModelKind, dict[str, Any]] = {
    ModelKind.LOGISTIC_REGRESSION: BASELINE_PARAMS[ModelKind.LOGISTIC_REGRESSION],
    ModelKind.RANDOM_FOREST: {**BASELINE_PARAMS[ModelKind.RANDOM_FOREST], "n_estimators": 10},
    ModelKind.HIST_GRADIENT_BOOSTING: {
        **BASELINE_PARAMS[ModelKind.HIST_GRADIENT_BOOSTING],
        "max_iter": 20,
    },
}
KINDS = list(ModelKind)


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return small_features()


@pytest.fixture(scope="module")
def transactions() -> pl.DataFrame:
    return small_transactions()


_threads = pytest.fixture(autouse=True)(single_threaded)


class Evil:
    """A class no registry should build from a file."""

    def __init__(self) -> None:
        self.payload = "anything"


@pytest.fixture(scope="module")
def train_frame(features: pl.DataFrame) -> pl.DataFrame:
    return split(features, latest_train_start(features)).train


def fitted(kind: ModelKind, frame: pl.DataFrame, seed: int = 0) -> Any:
    return fit(kind, FAST[kind], feature_matrix(frame, NAMES), fraud_labels(frame), seed)


def register(registry: ModelRegistry, kind: ModelKind, estimator: Any) -> str:
    metadata = registry.register(
        estimator,
        kind=kind,
        feature_names=NAMES,
        threshold={"value": 0.5, "objective": "fixed"},
        metrics={},
        params=FAST[kind],
        training={"period": "test"},
    )
    return metadata.version


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_scores(kind: ModelKind, train_frame: pl.DataFrame) -> None:
    x = feature_matrix(train_frame, NAMES)
    first = fitted(kind, train_frame, seed=3).predict_proba(x)
    second = fitted(kind, train_frame, seed=3).predict_proba(x)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("kind", KINDS)
def test_scores_are_probabilities(
    kind: ModelKind, train_frame: pl.DataFrame, features: pl.DataFrame, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path)
    version = register(registry, kind, fitted(kind, train_frame))
    scorer = BatchScorer(registry.load(version, NAMES), NAMES, pin_threads=False)
    scores = scorer.score_frame(features)
    assert scores.shape == (features.height,)
    assert scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores <= 1))
    assert scorer.score_batch(np.zeros((0, len(NAMES)))).shape == (0,)


@pytest.mark.parametrize("kind", KINDS)
def test_saved_model_needs_only_trusted_types_and_scores_the_same(
    kind: ModelKind, train_frame: pl.DataFrame, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path)
    estimator = fitted(kind, train_frame)
    version = register(registry, kind, estimator)
    artifact = tmp_path / "versions" / version / "model.skops"
    assert set(skops.io.get_untrusted_types(file=artifact)) <= set(TRUSTED_TYPES)
    loaded = registry.load(version, NAMES)
    x = feature_matrix(train_frame, NAMES)
    np.testing.assert_array_equal(loaded.estimator.predict_proba(x), estimator.predict_proba(x))


@pytest.mark.parametrize("kind", KINDS)
def test_feature_order_is_enforced(
    kind: ModelKind, train_frame: pl.DataFrame, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path)
    version = register(registry, kind, fitted(kind, train_frame))
    swapped = (NAMES[1], NAMES[0], *NAMES[2:])
    with pytest.raises(FeatureMismatchError, match="another order"):
        registry.load(version, swapped)
    with pytest.raises(FeatureMismatchError, match=r"spec-only: \['EXTRA'\]"):
        registry.load(version, (*NAMES, "EXTRA"))
    loaded = registry.load(version, NAMES)
    with pytest.raises(FeatureMismatchError):
        BatchScorer(loaded, swapped, pin_threads=False)
    scorer = BatchScorer(loaded, NAMES, pin_threads=False)
    with pytest.raises(ValueError, match=rf"shape \(rows, {len(NAMES)}\)"):
        scorer.score_batch(np.zeros((3, len(NAMES) - 1)))
    # A frame is read by column name: its own column order does not matter.
    shuffled = train_frame.select(reversed(train_frame.columns))
    np.testing.assert_array_equal(scorer.score_frame(shuffled), scorer.score_frame(train_frame))


@pytest.mark.parametrize("kind", KINDS)
def test_tampered_artifact_is_refused(
    kind: ModelKind, train_frame: pl.DataFrame, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path)
    version = register(registry, kind, fitted(kind, train_frame))
    artifact = tmp_path / "versions" / version / "model.skops"
    content = bytearray(artifact.read_bytes())
    content[len(content) // 2] ^= 0xFF
    artifact.write_bytes(bytes(content))
    with pytest.raises(ArtifactIntegrityError, match="modified after registration"):
        registry.load(version, NAMES)
    with pytest.raises(ArtifactIntegrityError):
        registry.promote(version)


def test_an_artifact_with_untrusted_types_is_never_built(
    train_frame: pl.DataFrame, tmp_path: Path
) -> None:
    # Even when an attacker rewrites the recorded hash to match, skops refuses to build it.
    registry = ModelRegistry(tmp_path)
    kind = ModelKind.RANDOM_FOREST
    version = register(registry, kind, fitted(kind, train_frame))
    directory = tmp_path / "versions" / version
    skops.io.dump({"model": Evil()}, directory / "model.skops")
    metadata = json.loads((directory / "metadata.json").read_text())
    metadata["artifact_sha256"] = (
        __import__("hashlib").sha256((directory / "model.skops").read_bytes()).hexdigest()
    )
    (directory / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(UntrustedArtifactError, match="Evil"):
        registry.load(version, NAMES)


def test_an_artifact_of_another_class_is_refused(train_frame: pl.DataFrame, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    lr = fitted(ModelKind.LOGISTIC_REGRESSION, train_frame)
    version = register(registry, ModelKind.RANDOM_FOREST, lr)  # metadata says forest
    with pytest.raises(UntrustedArtifactError, match="not a random_forest model"):
        registry.load(version, NAMES)


@pytest.mark.parametrize("kind", KINDS)
def test_one_predict_proba_per_batch(
    kind: ModelKind, train_frame: pl.DataFrame, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path)
    version = register(registry, kind, fitted(kind, train_frame))
    scorer = BatchScorer(registry.load(version, NAMES), NAMES, pin_threads=False)
    estimator = scorer.model.estimator
    calls: list[int] = []
    original = estimator.predict_proba

    def counting(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return original(x)  # type: ignore[no-any-return]

    estimator.predict_proba = counting
    matrix = feature_matrix(train_frame.head(250), NAMES)
    scores = scorer.score_batch(matrix)
    if kind is ModelKind.LOGISTIC_REGRESSION:
        assert calls == []  # the verified fast path (models.fastpath) does not call it
    else:
        assert calls == [250]
    assert np.array_equal(scores, original(matrix)[:, 1])


@pytest.mark.parametrize("kind", KINDS)
def test_scoring_is_single_threaded(
    kind: ModelKind, train_frame: pl.DataFrame, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path)
    version = register(registry, kind, fitted(kind, train_frame))
    scorer = BatchScorer(registry.load(version, NAMES), NAMES)
    try:
        params = scorer.model.estimator.get_params()
        assert params.get("n_jobs", 1) == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        scorer.close()


def test_threshold_comes_from_metadata_unless_overridden(
    train_frame: pl.DataFrame, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path)
    kind = ModelKind.LOGISTIC_REGRESSION
    loaded = registry.load(register(registry, kind, fitted(kind, train_frame)), NAMES)
    assert BatchScorer(loaded, NAMES, pin_threads=False).threshold == 0.5
    scorer = BatchScorer(loaded, NAMES, threshold=0.9, pin_threads=False)
    assert scorer.threshold == 0.9
    assert scorer.alerts(np.array([0.95, 0.9, 0.5])).tolist() == [True, True, False]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        BatchScorer(loaded, NAMES, threshold=2.0, pin_threads=False)
