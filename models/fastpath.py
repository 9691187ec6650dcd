"""Fraud scores without scikit-learn's per-call overhead, where provably the same numbers.

``predict_proba`` on a standardised logistic regression does little arithmetic: for a
micro-batch of a hundred rows, one subtraction, one division, one matrix product and a
sigmoid. Around it scikit-learn validates the input, its tags and its fitted state on
every call, which in a worker costs far more than the arithmetic (profiled: about 5 % of
the worker's CPU for two calls per batch, the score and the alerts' reasons).

`positive_proba` returns a function computing ``estimator.predict_proba(X)[:, 1]``:

- for a ``Pipeline(StandardScaler, LogisticRegression)`` on two classes (the project's
  logistic regression, ``models.estimators``), the same NumPy and SciPy operations
  scikit-learn performs, in the same order and on the same array layouts, minus the
  checks (the worker's features are always finite floats of the right width);
- for any other estimator, ``predict_proba`` itself.

Trust but verify: the fast function is used only if it agrees bit for bit with
``predict_proba`` on probe batches of several sizes when it is built (a scikit-learn
release that changed its arithmetic would fail the probe and fall back, with a log line).
Offline scoring and the live pipeline therefore alert on exactly the same transactions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float64]
Scores = npt.NDArray[np.float64]
#: Fraud scores (class 1 probabilities) of a batch of feature rows.
PositiveProba = Callable[[Matrix], Scores]

#: Rows in the probe batches that check a fast path against ``predict_proba``.
PROBE_SIZES = (1, 2, 7, 64, 500)


def positive_proba(estimator: Any) -> PositiveProba:
    """``estimator.predict_proba(X)[:, 1]``, by the fast path when one applies and agrees."""
    fast = _standardised_logistic(estimator)
    if fast is not None:
        if _agrees(fast, estimator):
            return fast
        logger.warning(
            "the fast scoring path disagrees with predict_proba for this scikit-learn "
            "release; scoring with predict_proba"
        )
    return _generic(estimator)


def _generic(estimator: Any) -> PositiveProba:
    def score(rows: Matrix) -> Scores:
        return np.asarray(estimator.predict_proba(rows)[:, 1], dtype=np.float64)

    return score


def _standardised_logistic(estimator: Any) -> PositiveProba | None:
    """The fast function of a fitted dense StandardScaler + binary LogisticRegression."""
    if not isinstance(estimator, Pipeline) or len(estimator.steps) != 2:
        return None
    scaler, classifier = (step for _, step in estimator.steps)
    if type(scaler) is not StandardScaler or type(classifier) is not LogisticRegression:
        return None
    coef = getattr(classifier, "coef_", None)
    classes = getattr(classifier, "classes_", None)
    if coef is None or classes is None or len(classes) != 2 or coef.shape[0] != 1:
        return None
    if getattr(scaler, "n_features_in_", None) != coef.shape[1]:
        return None
    # What StandardScaler.transform and LinearClassifierMixin.decision_function do on a
    # dense float64 array, in their order: copy, X -= mean_, X /= scale_, X @ coef_.T +
    # intercept_, flattened, then expit in place (LogisticRegression._predict_proba_lr).
    mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else None
    scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else None
    coef_t = coef.T
    intercept = classifier.intercept_

    def score(rows: Matrix) -> Scores:
        x = np.array(rows, dtype=np.float64, copy=True)
        if mean is not None:
            x -= mean
        if scale is not None:
            x /= scale
        scores: Scores = (x @ coef_t + intercept).reshape(-1)
        expit(scores, out=scores)
        return scores

    return score


def _agrees(fast: PositiveProba, estimator: Any) -> bool:
    """Whether ``fast`` equals ``predict_proba`` exactly on probe batches."""
    width = estimator.n_features_in_
    rng = np.random.default_rng(20181)
    for rows in PROBE_SIZES:
        # Spread over several orders of magnitude, like counts, amounts and risks.
        probe = rng.standard_normal((rows, width)) * 10.0 ** rng.integers(-2, 4, (rows, width))
        expected = np.asarray(estimator.predict_proba(probe)[:, 1], dtype=np.float64)
        if not np.array_equal(fast(probe), expected):
            return False
    return True
