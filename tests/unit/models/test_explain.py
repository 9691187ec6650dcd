"""Alert reasons by occlusion: right features, right numbers, one predict_proba per call."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from model_testdata import single_threaded, small_features
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from features.spec import DEFAULT_FEATURES
from models.estimators import BASELINE_PARAMS, ModelKind, feature_matrix, fit
from models.explain import MissingBaselineError, Reason, ReasonExplainer
from models.protocol import latest_train_start
from models.registry import LoadedModel, ModelMetadata, ModelRegistry, RegistryError
from models.threshold import Objective
from models.training import ThresholdRequest, TrainingConfig, feature_baseline, train

Matrix = npt.NDArray[np.float64]

_threads = pytest.fixture(autouse=True)(single_threaded)

#: The hand-built dataset: five noise features; fraud iff feature 2 is large.
NAMES = ("f0", "f1", "f2", "f3", "f4")
SIGNAL = 2
#: Small versions of the baselines, so the file stays fast.
SMALL_PARAMS: dict[ModelKind, dict[str, Any]] = {
    ModelKind.LOGISTIC_REGRESSION: BASELINE_PARAMS[ModelKind.LOGISTIC_REGRESSION],
    ModelKind.RANDOM_FOREST: {**BASELINE_PARAMS[ModelKind.RANDOM_FOREST], "n_estimators": 20},
    ModelKind.HIST_GRADIENT_BOOSTING: {
        **BASELINE_PARAMS[ModelKind.HIST_GRADIENT_BOOSTING],
        "max_iter": 30,
    },
}


def one_feature_dataset(rows: int = 800, seed: int = 0) -> tuple[Matrix, npt.NDArray[np.bool_]]:
    x = np.random.default_rng(seed).normal(size=(rows, len(NAMES)))
    return x, x[:, SIGNAL] > 1.0


@pytest.fixture(scope="module")
def dataset() -> tuple[Matrix, npt.NDArray[np.bool_]]:
    return one_feature_dataset()


@pytest.fixture(scope="module")
def models(dataset: tuple[Matrix, npt.NDArray[np.bool_]]) -> dict[ModelKind, Any]:
    x, y = dataset
    return {kind: fit(kind, SMALL_PARAMS[kind], x, y, seed=0) for kind in ModelKind}


def fraud_rows(count: int = 20) -> Matrix:
    """Fresh rows with a clearly large feature 2 and ordinary noise elsewhere."""
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(count, len(NAMES)))
    rows[:, SIGNAL] = rng.uniform(1.8, 3.0, size=count)
    return rows


def scores_of(estimator: Any, rows: Matrix) -> Matrix:
    return np.asarray(estimator.predict_proba(rows)[:, 1], dtype=np.float64)


class Counting:
    """Wraps an estimator and records the row count of every predict_proba call."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.calls: list[int] = []

    def predict_proba(self, x: Matrix) -> Matrix:
        self.calls.append(len(x))
        return np.asarray(self.estimator.predict_proba(x), dtype=np.float64)


class Logistic:
    """A fixed logistic model, sigmoid(x . weights): contributions known in advance."""

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)

    def predict_proba(self, x: Matrix) -> Matrix:
        fraud = 1 / (1 + np.exp(-(x @ self.weights)))
        return np.column_stack([1 - fraud, fraud])


# --- the method -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ModelKind))
def test_every_kind_names_the_one_informative_feature_first(
    kind: ModelKind, models: dict[ModelKind, Any], dataset: tuple[Matrix, Any]
) -> None:
    estimator = models[kind]
    explainer = ReasonExplainer(estimator, NAMES, feature_baseline(dataset[0]))
    rows = fraud_rows()
    scores = scores_of(estimator, rows)
    assert np.all(scores >= 0.5)  # they are alerts
    reasons = explainer.explain(rows, scores)
    assert len(reasons) == len(rows)
    assert [r[0].feature for r in reasons] == ["f2"] * len(rows)
    assert [r[0].value for r in reasons] == rows[:, SIGNAL].tolist()
    # Making feature 2 typical removes most of the score; no noise feature comes close.
    assert all(r[0].contribution > 0.3 for r in reasons)
    assert all(len(r) <= 3 for r in reasons)
    assert all(r[0].contribution > 3 * reason.contribution for r in reasons for reason in r[1:])


@pytest.mark.parametrize("kind", list(ModelKind))
def test_contributions_are_score_minus_occluded_score(
    kind: ModelKind, models: dict[ModelKind, Any], dataset: tuple[Matrix, Any]
) -> None:
    estimator = models[kind]
    baseline = feature_baseline(dataset[0])
    rows = fraud_rows(5)
    scores = scores_of(estimator, rows)
    reasons = ReasonExplainer(estimator, NAMES, baseline, top_k=len(NAMES)).explain(rows, scores)
    row = rows[3]
    expected: list[tuple[float, str, float]] = []
    for i, name in enumerate(NAMES):
        occluded = row.copy()
        occluded[i] = baseline[i]
        contribution = scores[3] - scores_of(estimator, occluded[None, :])[0]
        if contribution > 0:
            expected.append((contribution, name, float(row[i])))
    expected.sort(reverse=True)
    assert [(r.feature, r.value) for r in reasons[3]] == [(n, v) for _, n, v in expected]
    assert [r.contribution for r in reasons[3]] == pytest.approx(
        [c for c, _, _ in expected], abs=1e-12
    )


def test_known_contributions_of_a_fixed_model() -> None:
    model = Logistic([1.0, 2.0, 3.0])
    explainer = ReasonExplainer(model, ("a", "b", "c"), [0.0, 0.0, 0.0], top_k=3)
    row = np.array([[1.0, 1.0, 1.0]])
    score = scores_of(model, row)
    reasons = explainer.explain(row, score)

    def sigmoid(z: float) -> float:
        return float(1 / (1 + np.exp(-z)))

    assert reasons == [
        [
            Reason("c", 1.0, pytest.approx(sigmoid(6) - sigmoid(3))),  # type: ignore[arg-type]
            Reason("b", 1.0, pytest.approx(sigmoid(6) - sigmoid(4))),  # type: ignore[arg-type]
            Reason("a", 1.0, pytest.approx(sigmoid(6) - sigmoid(5))),  # type: ignore[arg-type]
        ]
    ]


def test_top_k_is_respected() -> None:
    model = Logistic([1.0, 2.0, 3.0, 4.0])
    names = ("a", "b", "c", "d")
    rows = np.ones((3, 4))
    scores = scores_of(model, rows)
    for top_k, expected in ((1, ["d"]), (2, ["d", "c"]), (9, ["d", "c", "b", "a"])):
        reasons = ReasonExplainer(model, names, [0.0] * 4, top_k=top_k).explain(rows, scores)
        assert [[r.feature for r in row] for row in reasons] == [expected] * 3


def test_rows_without_a_positive_contribution_have_no_reasons(
    models: dict[ModelKind, Any], dataset: tuple[Matrix, Any]
) -> None:
    model = Logistic([1.0, 2.0])
    explainer = ReasonExplainer(model, ("a", "b"), [0.5, 0.5])
    rows = np.array([[0.5, 0.5], [-1.0, -1.0], [2.0, 0.5], [2.0, -3.0]])
    reasons = explainer.explain(rows, scores_of(model, rows))
    # At the baseline; below it everywhere; one feature above; one above, one below.
    assert [[r.feature for r in row] for row in reasons] == [[], [], ["a"], ["a"]]
    # A real model on a row equal to its baseline: every cell exactly 0, so no reasons.
    baseline = feature_baseline(dataset[0])
    lr = models[ModelKind.LOGISTIC_REGRESSION]
    typical = np.array([baseline])
    assert ReasonExplainer(lr, NAMES, baseline).explain(typical, scores_of(lr, typical)) == [[]]


def test_one_predict_proba_call_per_explain(
    models: dict[ModelKind, Any], dataset: tuple[Matrix, Any]
) -> None:
    counting = Counting(models[ModelKind.RANDOM_FOREST])
    explainer = ReasonExplainer(counting, NAMES, feature_baseline(dataset[0]))
    rows = fraud_rows(7)
    scores = scores_of(counting.estimator, rows)  # the scorer's job, not counted
    explainer.explain(rows, scores)
    assert counting.calls == [7 * len(NAMES)]
    assert explainer.explain(np.zeros((0, len(NAMES))), np.zeros(0)) == []
    assert counting.calls == [7 * len(NAMES)]  # empty input: no call


def test_bad_input_is_refused() -> None:
    model = Logistic([1.0, 2.0])
    with pytest.raises(ValueError, match="one value for each of the 2 features"):
        ReasonExplainer(model, ("a", "b"), [0.0])
    with pytest.raises(ValueError, match="non-finite"):
        ReasonExplainer(model, ("a", "b"), [0.0, float("nan")])
    with pytest.raises(ValueError, match="top_k"):
        ReasonExplainer(model, ("a", "b"), [0.0, 0.0], top_k=0)
    with pytest.raises(ValueError, match="at least one feature"):
        ReasonExplainer(model, (), [])
    explainer = ReasonExplainer(model, ("a", "b"), [0.0, 0.0])
    with pytest.raises(ValueError, match=r"shape \(k, 2\)"):
        explainer.explain(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="expected 2 scores"):
        explainer.explain(np.zeros((2, 2)), np.zeros(3))


# --- the baseline: training, metadata, registry ---------------------------------------


def test_the_baseline_is_the_column_medians() -> None:
    x = np.array([[1.0, 10.0], [2.0, 30.0], [100.0, 20.0]])
    assert feature_baseline(x) == (2.0, 20.0)
    with pytest.raises(ValueError, match="non-empty"):
        feature_baseline(np.zeros((0, 2)))


def test_training_stores_a_baseline_of_the_training_matrix() -> None:
    features = small_features()
    names = DEFAULT_FEATURES.names
    result = train(
        features,
        TrainingConfig(
            kind=ModelKind.LOGISTIC_REGRESSION,
            feature_names=names,
            train_start=latest_train_start(features),
            threshold=ThresholdRequest(Objective.ALERT_BUDGET, 5),
        ),
    )
    assert len(result.feature_baseline) == len(names) == len(DEFAULT_FEATURES)
    expected = np.median(feature_matrix(result.split.train, names), axis=0)
    assert result.feature_baseline == tuple(expected.tolist())


def metadata(baseline: tuple[float, ...] | None) -> ModelMetadata:
    return ModelMetadata(
        version="20240501T120000Z-lr-0123abcd",
        kind=ModelKind.LOGISTIC_REGRESSION,
        feature_names=("a", "b"),
        threshold={"value": 0.5},
        metrics={},
        params={},
        training={},
        libraries={},
        created_at="2024-05-01T12:00:00Z",
        artifact_sha256="0" * 64,
        feature_baseline=baseline,
    )


def test_metadata_round_trips_with_and_without_a_baseline() -> None:
    with_baseline = metadata((0.25, 3.0))
    text = with_baseline.to_json()
    assert json.loads(text)["feature_baseline"] == [0.25, 3.0]
    assert ModelMetadata.from_json(text) == with_baseline
    without = metadata(None)
    assert "feature_baseline" not in json.loads(without.to_json())
    assert ModelMetadata.from_json(without.to_json()) == without


def test_metadata_written_before_baselines_still_loads() -> None:
    old = {
        "version": "20240501T120000Z-lr-0123abcd",
        "kind": "logistic_regression",
        "feature_names": ["a", "b"],
        "threshold": {"value": 0.5},
        "metrics": {},
        "params": {},
        "training": {},
        "libraries": {},
        "created_at": "2024-05-01T12:00:00Z",
        "artifact_sha256": "0" * 64,
        "format": 1,
    }
    loaded = ModelMetadata.from_json(json.dumps(old))
    assert loaded.feature_baseline is None
    assert loaded == metadata(None)
    with pytest.raises(RegistryError, match="2 features"):
        ModelMetadata.from_json(json.dumps({**old, "feature_baseline": [1.0]}))


def tiny_model() -> Pipeline:
    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
    model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression())])
    return model.fit(x, np.array([False, True, False, True]))


def register(registry: ModelRegistry, baseline: Sequence[float] | None) -> ModelMetadata:
    return registry.register(
        tiny_model(),
        kind=ModelKind.LOGISTIC_REGRESSION,
        feature_names=("a", "b"),
        threshold={"value": 0.5, "objective": "fixed"},
        metrics={},
        params={},
        training={},
        feature_baseline=baseline,
    )


def test_a_registered_baseline_reaches_the_explainer(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    version = register(registry, [0.5, 0.5]).version
    loaded = registry.load(version, ("a", "b"))
    assert loaded.metadata.feature_baseline == (0.5, 0.5)
    explainer = ReasonExplainer.for_model(loaded, top_k=1)
    assert explainer.baseline.tolist() == [0.5, 0.5]
    assert explainer.feature_names == ("a", "b")
    assert explainer.top_k == 1
    rows = np.array([[1.0, 0.0]])  # the fraud pattern: a high, b low
    reasons = explainer.explain(rows, scores_of(loaded.estimator, rows))
    assert [r.feature for r in reasons[0]] == ["a"]


def test_a_model_without_a_baseline_is_refused_clearly(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    version = register(registry, None).version
    loaded = registry.load(version)
    assert loaded.metadata.feature_baseline is None
    with pytest.raises(MissingBaselineError, match=f"model {version} has no feature baseline"):
        ReasonExplainer.for_model(loaded)
    # Built by hand, e.g. in a test, a LoadedModel behaves the same.
    with pytest.raises(MissingBaselineError):
        ReasonExplainer.for_model(LoadedModel(tiny_model(), metadata(None)))


def test_the_registry_refuses_a_malformed_baseline(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError, match="1 values for 2 features"):
        register(registry, [0.5])
    with pytest.raises(RegistryError, match="non-finite"):
        register(registry, [0.5, float("inf")])
    assert registry.versions() == []
