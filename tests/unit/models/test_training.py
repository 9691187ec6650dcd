"""The training recipe end to end on a small simulated dataset."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from model_testdata import single_threaded, small_features, small_transactions

from features.spec import DEFAULT_FEATURES, HANDBOOK_FEATURES
from models.estimators import ModelKind
from models.protocol import ProtocolError, latest_train_start
from models.threshold import Objective
from models.training import (
    ThresholdRequest,
    TrainingConfig,
    train,
    training_fingerprint,
)


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return small_features()


@pytest.fixture(scope="module")
def transactions() -> pl.DataFrame:
    return small_transactions()


_threads = pytest.fixture(autouse=True)(single_threaded)


def config(features: pl.DataFrame, **changes: object) -> TrainingConfig:
    base = TrainingConfig(
        kind=ModelKind.LOGISTIC_REGRESSION,
        feature_names=DEFAULT_FEATURES.names,
        train_start=latest_train_start(features),
        threshold=ThresholdRequest(Objective.ALERT_BUDGET, 5),
    )
    return TrainingConfig(**{**base.__dict__, **changes})


def test_train_assesses_on_the_test_period_and_thresholds_on_validation(
    features: pl.DataFrame,
) -> None:
    result = train(features, config(features))
    assert result.split.test_start == result.config.train_start + timedelta(days=14)
    assert 0.5 < result.test.auc_roc <= 1
    assert 0 < result.test.average_precision <= 1
    assert 0 <= result.test.card_precision <= 1
    assert result.test.days == 7
    # An alert budget is met on the registered model's own scores of the delay week.
    delay_start = result.split.train_end + timedelta(days=1)
    assert result.threshold.chosen_on.startswith(
        f"this model's scores on the delay period {delay_start}"
    )
    delay = features.filter(
        (pl.col("tx_time").dt.date() >= delay_start)
        & (pl.col("tx_time").dt.date() < result.split.test_start)
    )
    delay_scores = result.estimator.predict_proba(
        delay.select(result.config.feature_names).to_numpy()
    )[:, 1]
    assert (delay_scores >= result.threshold.value).sum() / 7 <= 5
    assert result.threshold.alerts_per_day <= 5
    assert 0 <= result.threshold.value <= 1
    assert result.train_rows == result.split.train.height
    metrics = result.metrics()
    assert metrics["test"]["average_precision"] == result.test.average_precision  # type: ignore[index]
    assert result.training_info()["fingerprint"] == result.fingerprint


def test_selection_keeps_the_best_validation_candidate(features: pl.DataFrame) -> None:
    result = train(features, config(features, select=True, folds=2))
    aps = [c.validation.average_precision for c in result.selection.candidates]
    assert len(aps) == 3
    assert result.validation.average_precision == max(aps)
    assert result.params == result.selection.best.params
    assert all(len(c.folds) == 2 for c in result.selection.candidates)


def test_training_is_deterministic(features: pl.DataFrame) -> None:
    kind = ModelKind.RANDOM_FOREST
    params = {"n_estimators": 5, "max_depth": 6}
    first = train(features, config(features, kind=kind, params=params, seed=4))
    second = train(features, config(features, kind=kind, params=params, seed=4))
    assert first.fingerprint == second.fingerprint
    assert first.test == second.test
    assert first.threshold == second.threshold


def test_the_handbook_features_can_be_trained_alone(features: pl.DataFrame) -> None:
    result = train(features, config(features, feature_names=HANDBOOK_FEATURES.names))
    assert result.estimator.n_features_in_ == 15


def test_too_little_history_for_validation_is_refused(features: pl.DataFrame) -> None:
    first_day = features["tx_time"].min().date()  # type: ignore[union-attr]
    with pytest.raises(ProtocolError, match="needs days"):
        train(features, config(features, train_start=first_day + timedelta(days=3)))


def test_fingerprint_changes_with_any_value_label_or_name() -> None:
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    y = np.array([True, False, False])
    base = training_fingerprint(("a", "b"), x, y)
    assert base.startswith("sha256:")
    assert base == training_fingerprint(("a", "b"), x.copy(), y.copy())
    changed = x.copy()
    changed[2, 1] += 1e-9
    assert training_fingerprint(("a", "b"), changed, y) != base
    assert training_fingerprint(("a", "b"), x, ~y) != base
    assert training_fingerprint(("b", "a"), x, y) != base
