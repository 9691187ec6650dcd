"""The model kinds we ship, their hyper-parameters, and how a feature frame becomes X and y.

Three scikit-learn classifiers, each a plain estimator (or a two-step pipeline) so that
skops can save it with a short, explicit list of trusted types (`models.registry`):

- ``logistic_regression``: standardised features, L2 logistic regression. A baseline that
  is cheap to score and easy to explain.
- ``random_forest``: the handbook's strongest model family on its data.
- ``hist_gradient_boosting``: scikit-learn's histogram gradient boosting, our stand-in for
  the handbook's XGBoost (same family: boosted trees on binned features).

Class imbalance (about 0.8 % frauds) is a hyper-parameter, not a silent default: every
kind takes ``class_weight`` (None, or "balanced" to weigh frauds by the inverse class
frequency), and model selection on prequential folds (`models.selection`) keeps the
choice that ranks best on validation data. We do not resample: the metrics are ranking
metrics, reweighting is the same idea without dropping or inventing rows, and the alert
threshold is chosen on validation scores afterwards (`models.threshold`), so the skewed
probabilities that weighting gives do not leak into alert decisions.

Every estimator is built with ``n_jobs=1`` where it has the parameter: training runs on a
shared 2-core machine and scoring inside a single-threaded worker (`models.scoring`).
Models are fitted on plain float64 arrays, not frames: the feature order is enforced by
us (metadata and `features.spec`), and scikit-learn then keeps no column names of its own
to disagree with.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from features import dataset

Matrix = npt.NDArray[np.float64]
Params = Mapping[str, Any]


class ModelKind(enum.StrEnum):
    """A family of model we can train, save and serve."""

    LOGISTIC_REGRESSION = "logistic_regression"
    RANDOM_FOREST = "random_forest"
    HIST_GRADIENT_BOOSTING = "hist_gradient_boosting"

    @property
    def short(self) -> str:
        """A short name for version ids and tables."""
        return _SHORT[self]

    @classmethod
    def parse(cls, text: str) -> ModelKind:
        """A kind from its name or short name (``lr``, ``rf``, ``hgb``).

        Raises:
            ValueError: The name is not a kind; the message lists the valid ones.
        """
        lowered = text.strip().lower().replace("-", "_")
        for kind in cls:
            if lowered in (kind.value, kind.short):
                return kind
        names = ", ".join(f"{k.value} ({k.short})" for k in cls)
        raise ValueError(f"unknown model kind {text!r}: choose one of {names}")


_SHORT: Final = {
    ModelKind.LOGISTIC_REGRESSION: "lr",
    ModelKind.RANDOM_FOREST: "rf",
    ModelKind.HIST_GRADIENT_BOOSTING: "hgb",
}

#: The handbook's baseline settings (chapter 3: library defaults, unweighted classes),
#: which the comparison with its published results uses.
BASELINE_PARAMS: Final[dict[ModelKind, dict[str, Any]]] = {
    ModelKind.LOGISTIC_REGRESSION: {"C": 1.0, "class_weight": None},
    ModelKind.RANDOM_FOREST: {
        "n_estimators": 100,
        "max_depth": None,
        "min_samples_leaf": 1,
        "max_features": "sqrt",
        "class_weight": None,
    },
    ModelKind.HIST_GRADIENT_BOOSTING: {
        "learning_rate": 0.1,
        "max_iter": 100,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 20,
        "l2_regularization": 0.0,
        "class_weight": None,
    },
}

#: Boosting with smaller steps, smaller trees and more regularisation than the baseline.
_SLOW_HGB: Final = {
    **BASELINE_PARAMS[ModelKind.HIST_GRADIENT_BOOSTING],
    "learning_rate": 0.05,
    "max_iter": 300,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 50,
    "l2_regularization": 1.0,
}

#: Candidates of model selection: a few settings per kind, imbalance handling included.
#: Kept small so that selection over four folds runs on two cores in minutes.
SEARCH_GRIDS: Final[dict[ModelKind, tuple[dict[str, Any], ...]]] = {
    ModelKind.LOGISTIC_REGRESSION: (
        {"C": 1.0, "class_weight": None},
        {"C": 0.1, "class_weight": None},
        {"C": 1.0, "class_weight": "balanced"},
    ),
    ModelKind.RANDOM_FOREST: (
        BASELINE_PARAMS[ModelKind.RANDOM_FOREST],
        {**BASELINE_PARAMS[ModelKind.RANDOM_FOREST], "min_samples_leaf": 5, "max_features": 0.5},
        {**BASELINE_PARAMS[ModelKind.RANDOM_FOREST], "max_depth": 20, "class_weight": "balanced"},
    ),
    ModelKind.HIST_GRADIENT_BOOSTING: (
        BASELINE_PARAMS[ModelKind.HIST_GRADIENT_BOOSTING],
        {**BASELINE_PARAMS[ModelKind.HIST_GRADIENT_BOOSTING], "class_weight": "balanced"},
        _SLOW_HGB,
        {**_SLOW_HGB, "class_weight": "balanced"},
    ),
}


def build_estimator(kind: ModelKind, params: Params, seed: int) -> Any:
    """An unfitted estimator of ``kind`` with ``params``, deterministic for ``seed``.

    Args:
        kind: The model family.
        params: Hyper-parameters of that family (see `BASELINE_PARAMS` for the names).
        seed: Seed of every random choice the estimator makes.

    Returns:
        A scikit-learn classifier with ``predict_proba``.
    """
    if kind is ModelKind.LOGISTIC_REGRESSION:
        return Pipeline(
            [
                ("scale", StandardScaler()),
                # lbfgs on standardised features converges well within 1000 iterations.
                ("classify", LogisticRegression(max_iter=1000, random_state=seed, **params)),
            ]
        )
    if kind is ModelKind.RANDOM_FOREST:
        return RandomForestClassifier(random_state=seed, n_jobs=1, **params)
    # No early stopping: it would hold out a random tenth of the train week, and the
    # number of iterations is what selection chooses.
    return HistGradientBoostingClassifier(random_state=seed, early_stopping=False, **params)


def feature_matrix(frame: pl.DataFrame, names: Sequence[str]) -> Matrix:
    """The named feature columns of a frame, in that order, as a float64 matrix.

    Raises:
        ValueError: A named column is missing or has nulls: a model must never see a
            silently reordered or incomplete vector.
    """
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks feature columns: {missing}")
    selected = frame.select(pl.col(n).cast(pl.Float64) for n in names)
    nulls = [n for n, k in zip(names, selected.null_count().row(0), strict=True) if k]
    if nulls:
        raise ValueError(f"feature columns with nulls: {nulls}")
    return np.ascontiguousarray(selected.to_numpy(), dtype=np.float64)


def fraud_labels(frame: pl.DataFrame) -> npt.NDArray[np.bool_]:
    """The ``is_fraud`` labels of a frame as a boolean array (missing labels are genuine)."""
    return frame[dataset.IS_FRAUD].fill_null(False).to_numpy().astype(np.bool_)


def fit(kind: ModelKind, params: Params, x: Matrix, y: npt.NDArray[np.bool_], seed: int) -> Any:
    """Fit a new estimator of ``kind`` on ``x`` and ``y``.

    Raises:
        ValueError: The labels hold a single class: no classifier can be learned.
    """
    if y.all() or not y.any():
        raise ValueError("the training data must hold both frauds and genuine transactions")
    estimator = build_estimator(kind, params, seed)
    estimator.fit(x, y)
    return estimator


def fraud_scores(estimator: Any, x: Matrix) -> npt.NDArray[np.float64]:
    """The fraud probability of each row: one ``predict_proba`` call for the whole matrix."""
    proba = estimator.predict_proba(x)
    return np.ascontiguousarray(proba[:, 1], dtype=np.float64)
