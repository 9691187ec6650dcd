"""Training a model the way it is assessed: validate, fit, test, choose the threshold.

One call, `train`, runs the whole recipe on a feature frame (`features.offline` output):

1. Validation folds (`models.protocol`): prequential splits that end before the train
   period. With ``select``, every candidate of the kind's grid is validated on them
   (`models.selection`); otherwise only the given (or baseline) parameters, on the most
   recent fold.
2. Fit the chosen parameters on the train period; score and assess the test period with
   the handbook's metrics (`models.evaluation`).
3. Choose the alert threshold for the requested objective (`models.threshold`) and
   report what it gives on the test period. An alert budget needs no labels, only the
   score distribution of the model that will run: it is chosen on the fitted model's own
   scores of the delay period (after its training, before the test). Scores of another
   model (a validation fold's, trained on other weeks) can sit on another scale: a
   gradient-boosting model's threshold taken from one gave three times the budget.
   A precision target needs labels and a model they are unseen by: it is chosen on the
   most recent validation fold, as is a budget when the protocol has no delay.
4. Fingerprint the training data (`training_fingerprint`) and record each feature's
   median over the training rows (`feature_baseline`), the reference values the alert
   explainer (`models.explain`) occludes features with.

The result carries everything the registry stores (`models.registry`); `train` itself
writes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl

from models.estimators import (
    BASELINE_PARAMS,
    SEARCH_GRIDS,
    ModelKind,
    Params,
    feature_matrix,
    fit,
    fraud_labels,
    fraud_scores,
)
from models.evaluation import TOP_K_CARDS, Assessment, assess
from models.protocol import (
    DAY,
    HANDBOOK_PROTOCOL,
    Protocol,
    ProtocolError,
    Split,
    prequential_splits,
    split,
    with_day,
)
from models.selection import Selection, select, validate
from models.threshold import (
    DEFAULT_ALERTS_PER_DAY,
    Objective,
    ThresholdChoice,
    alert_figures,
    by_alert_budget,
    by_precision_target,
    fixed,
)

logger = logging.getLogger(__name__)

#: How `training_fingerprint` hashes, recorded next to the hash in the metadata.
FINGERPRINT_METHOD: Final = (
    "sha256 over: feature names (UTF-8, newline-separated), then the training matrix as "
    "little-endian float64 in row-major order, then the labels as one byte per row"
)


@dataclass(frozen=True, slots=True)
class ThresholdRequest:
    """How the alert threshold is to be chosen.

    Attributes:
        objective: Alert budget, precision target, or a fixed value.
        target: Alerts per day, the precision, or the fixed threshold.
    """

    objective: Objective = Objective.ALERT_BUDGET
    target: float = DEFAULT_ALERTS_PER_DAY


#: The default threshold request: the handbook's 100 alerts a day.
DEFAULT_THRESHOLD: Final = ThresholdRequest()


@dataclass(frozen=True)
class TrainingConfig:
    """What to train and how to assess it.

    Attributes:
        kind: The model family.
        feature_names: The model's inputs, in order (a `features.spec.FeatureSet`'s names).
        train_start: First day of the train period.
        protocol: Train, delay and test lengths.
        params: Hyper-parameters; None means the kind's baseline. Ignored with ``select``.
        select: Choose the parameters among the kind's grid on validation folds.
        folds: Validation folds used by selection (one fold without selection).
        seed: Seed of the estimators.
        threshold: How to choose the threshold.
        k: Cards per day of Card Precision@k.
    """

    kind: ModelKind
    feature_names: tuple[str, ...]
    train_start: date
    protocol: Protocol = HANDBOOK_PROTOCOL
    params: Mapping[str, Any] | None = None
    select: bool = False
    folds: int = 4
    seed: int = 0
    threshold: ThresholdRequest = DEFAULT_THRESHOLD
    k: int = TOP_K_CARDS

    def candidates(self) -> tuple[Params, ...]:
        """The parameter sets to validate."""
        if self.select:
            return SEARCH_GRIDS[self.kind]
        return (self.params if self.params is not None else BASELINE_PARAMS[self.kind],)


@dataclass(frozen=True)
class TrainingResult:
    """A fitted model with its assessment, threshold and provenance.

    Attributes:
        config: What was asked.
        estimator: The fitted scikit-learn classifier.
        params: The parameters it was fitted with.
        split: The train/test split.
        test: The handbook's metrics on the test period.
        validation: Mean metrics of the chosen parameters on the validation folds.
        selection: Every candidate's validation results.
        threshold: The threshold and its figures on validation data.
        test_alerts: Alerts per day, precision and recall at the threshold on the test.
        fingerprint: `training_fingerprint` of the training data.
        train_rows: Training transactions.
        train_frauds: Frauds among them.
        feature_baseline: `feature_baseline` of the training matrix, in feature order;
            registered with the model (``ModelRegistry.register(feature_baseline=...)``).
    """

    config: TrainingConfig
    estimator: Any = field(repr=False)
    params: dict[str, Any]
    split: Split = field(repr=False)
    test: Assessment
    validation: Assessment
    selection: Selection = field(repr=False)
    threshold: ThresholdChoice
    test_alerts: dict[str, float]
    fingerprint: str
    train_rows: int
    train_frauds: int
    feature_baseline: tuple[float, ...] = field(repr=False)

    def metrics(self) -> dict[str, object]:
        """The metrics block of the registry metadata."""
        return {
            "protocol": "handbook: train period, delay, test period; known compromised "
            "cards removed from the test period",
            "test_period": f"{self.split.test_start}..{self.split.test_end}",
            "test": _finite(self.test.as_dict()),
            "test_alerts": _finite(self.test_alerts),
            "validation": _finite(self.validation.as_dict()),
            "validation_folds": len(self.selection.best.folds),
            "candidates": [
                {"params": c.params, "validation": _finite(c.validation.as_dict())}
                for c in self.selection.candidates
            ],
        }

    def training_info(self) -> dict[str, object]:
        """The training block of the registry metadata."""
        protocol = self.config.protocol
        return {
            "period": f"{self.split.train_start}..{self.split.train_end}",
            "train_days": protocol.train_days,
            "delay_days": protocol.delay_days,
            "test_days": protocol.test_days,
            "rows": self.train_rows,
            "frauds": self.train_frauds,
            "seed": self.config.seed,
            "model_selection": self.config.select,
            "fingerprint": self.fingerprint,
            "fingerprint_method": FINGERPRINT_METHOD,
        }


def _finite(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in values.items()
    }


def training_fingerprint(
    feature_names: Sequence[str], x: npt.NDArray[np.float64], y: npt.NDArray[np.bool_]
) -> str:
    """A fingerprint of exactly what a model was fitted on (see `FINGERPRINT_METHOD`).

    Hashing the matrix rather than a file makes the fingerprint independent of how the
    data was stored (Parquet or CSV of the same rows agree) and sensitive to everything
    the model saw: rows, order, feature values and labels.
    """
    digest = hashlib.sha256()
    digest.update("\n".join(feature_names).encode())
    digest.update(np.ascontiguousarray(x, dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.uint8).tobytes())
    return f"sha256:{digest.hexdigest()}"


def feature_baseline(x: npt.NDArray[np.float64]) -> tuple[float, ...]:
    """Each feature's typical value: the median of its column over the training rows.

    The median rather than the mean because transaction features are skewed (amounts,
    counts with long tails) and some are 0/1 flags: one extreme training row does not move
    the median, and for a flag it is the usual value, not a fraction no transaction has.
    Computed on exactly the matrix the model is fitted on, so it describes what the model
    saw.

    Args:
        x: The training matrix, shape ``(rows, features)``.

    Raises:
        ValueError: The matrix has no rows.
    """
    if x.ndim != 2 or not len(x):
        raise ValueError(f"a feature baseline needs a non-empty matrix, got shape {x.shape}")
    return tuple(float(v) for v in np.median(x, axis=0))


def train(features: pl.DataFrame, config: TrainingConfig) -> TrainingResult:
    """Validate, fit, assess and threshold a model (see the module docstring).

    Args:
        features: Transactions with their features, as `features.offline` returns them.
        config: What to train.

    Returns:
        The fitted model and everything to register with it.

    Raises:
        models.protocol.ProtocolError: The dataset does not cover the periods needed.
        models.threshold.ThresholdError: The threshold objective cannot be met.
        ValueError: A period has a single class, or feature columns are missing.
    """
    names = config.feature_names
    protocol = config.protocol
    assessed = split(features, config.train_start, protocol)
    n_folds = config.folds if config.select else 1
    try:
        folds = prequential_splits(
            features, protocol.validation_start(config.train_start), n_folds, protocol
        )
    except ProtocolError as exc:
        raise ProtocolError(
            f"too little history before {config.train_start} for {n_folds} validation "
            f"fold(s), which choose the threshold and the model: {exc}"
        ) from None
    logger.info("validating %d candidate(s) on %d fold(s)", len(config.candidates()), len(folds))
    selection = select(config.kind, config.candidates(), folds, names, config.seed, config.k)
    params = selection.best.params

    x_train = feature_matrix(assessed.train, names)
    y_train = fraud_labels(assessed.train)
    estimator = fit(config.kind, params, x_train, y_train, config.seed)
    test_scores = fraud_scores(estimator, feature_matrix(assessed.test, names))
    test = assess(assessed.test, test_scores, config.k)

    first = selection.first_fold
    if config.threshold.objective is Objective.ALERT_BUDGET and protocol.delay_days > 0:
        delay_start = assessed.train_end + timedelta(days=1)
        day = pl.col(DAY)
        delay = with_day(features).filter((day >= delay_start) & (day < assessed.test_start))
        threshold = choose_threshold(
            config.threshold,
            fraud_scores(estimator, feature_matrix(delay, names)),
            fraud_labels(delay),
            protocol.delay_days,
            f"this model's scores on the delay period {delay_start}.."
            f"{assessed.test_start - timedelta(days=1)} (an alert budget needs no labels)",
        )
    else:
        threshold = choose_threshold(
            config.threshold,
            first.scores,
            fraud_labels(first.split.test),
            protocol.test_days,
            f"validation period {first.split.test_start}..{first.split.test_end} "
            f"(model trained {first.split.train_start}..{first.split.train_end})",
        )
    per_day, precision, recall = alert_figures(
        test_scores, fraud_labels(assessed.test), protocol.test_days, threshold.value
    )
    return TrainingResult(
        config=config,
        estimator=estimator,
        params=params,
        split=assessed,
        test=test,
        validation=selection.best.validation,
        selection=selection,
        threshold=threshold,
        test_alerts={"alerts_per_day": per_day, "precision": precision, "recall": recall},
        fingerprint=training_fingerprint(names, x_train, y_train),
        train_rows=assessed.train.height,
        train_frauds=int(y_train.sum()),
        feature_baseline=feature_baseline(x_train),
    )


def choose_threshold(
    request: ThresholdRequest,
    scores: npt.NDArray[np.float64],
    labels: npt.NDArray[np.bool_],
    days: int,
    chosen_on: str,
) -> ThresholdChoice:
    """Apply a threshold request to validation scores."""
    if request.objective is Objective.ALERT_BUDGET:
        return by_alert_budget(scores, labels, days, request.target, chosen_on)
    if request.objective is Objective.PRECISION_TARGET:
        return by_precision_target(scores, labels, days, request.target, chosen_on)
    return fixed(request.target, scores, labels, days, chosen_on)


def handbook_comparable(
    features: pl.DataFrame,
    kind: ModelKind,
    params: Params,
    feature_names: Sequence[str],
    train_start: date,
    folds: int,
    seed: int = 0,
    protocol: Protocol = HANDBOOK_PROTOCOL,
    k: int = TOP_K_CARDS,
) -> Assessment:
    """Mean test metrics over prequential test folds, as the handbook's chapter 5 reports.

    The handbook's figures after model selection are means over ``folds`` test folds whose
    most recent training starts ``(folds - 1)`` test periods after ``train_start``.
    """
    latest = train_start + timedelta(days=(folds - 1) * protocol.test_days)
    result, _ = validate(
        kind, params, prequential_splits(features, latest, folds, protocol), feature_names, seed, k
    )
    return result.validation
