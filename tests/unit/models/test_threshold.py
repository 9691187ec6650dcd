"""Threshold objectives on validation scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.threshold import (
    Objective,
    ThresholdError,
    alert_figures,
    by_alert_budget,
    by_precision_target,
    fixed,
)

SCORES = np.array([0.95, 0.9, 0.8, 0.8, 0.5, 0.3, 0.2, 0.1])
LABELS = np.array([True, True, False, True, False, True, False, False])


def test_alert_budget_takes_the_lowest_threshold_within_budget() -> None:
    # 2 days x 1.5 alerts = 3 alerts allowed; the 3rd and 4th scores tie at .8, so only
    # the top two (>= .9) fit.
    choice = by_alert_budget(SCORES, LABELS, days=2, alerts_per_day=1.5, chosen_on="v")
    assert choice.value == 0.9
    assert choice.objective is Objective.ALERT_BUDGET
    assert choice.alerts_per_day == 1.0
    assert choice.precision == 1.0
    assert choice.recall == 0.5


def test_alert_budget_that_covers_a_tie_includes_it() -> None:
    choice = by_alert_budget(SCORES, LABELS, days=2, alerts_per_day=2, chosen_on="v")
    assert choice.value == 0.8
    assert choice.alerts_per_day == 2.0


def test_alert_budget_above_the_data_alerts_on_everything() -> None:
    choice = by_alert_budget(SCORES, LABELS, days=1, alerts_per_day=100, chosen_on="v")
    assert choice.value == 0.1
    assert choice.recall == 1.0


def test_alert_budget_below_a_top_tie_keeps_the_top_score() -> None:
    scores = np.array([1.0, 1.0, 1.0, 0.2])
    labels = np.array([True, True, False, False])
    choice = by_alert_budget(scores, labels, days=1, alerts_per_day=2, chosen_on="v")
    assert choice.value == 1.0
    assert choice.alerts_per_day == 3.0  # the overrun is recorded, not hidden


def test_precision_target_takes_the_lowest_threshold_that_reaches_it() -> None:
    # Cumulative precision at .95: 1, .9: 1, .8: 3/4, .5: 3/5, .3: 4/6.
    choice = by_precision_target(SCORES, LABELS, days=1, precision=0.75, chosen_on="v")
    assert choice.value == 0.8
    assert choice.precision == 0.75
    choice = by_precision_target(SCORES, LABELS, days=1, precision=0.65, chosen_on="v")
    assert choice.value == 0.3


def test_unreachable_precision_target_says_what_is_reachable() -> None:
    labels = np.array([False, True])
    with pytest.raises(ThresholdError, match=r"best is 0\.500"):
        by_precision_target(np.array([0.9, 0.1]), labels, days=1, precision=0.9, chosen_on="v")


def test_fixed_threshold_records_its_validation_figures() -> None:
    choice = fixed(0.5, SCORES, LABELS, days=5, chosen_on="v")
    assert choice.value == 0.5
    assert choice.alerts_per_day == pytest.approx(1.0)
    assert choice.as_dict()["objective"] == "fixed"
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fixed(1.5, SCORES, LABELS, days=1, chosen_on="v")


def test_alert_figures_without_alerts_or_frauds_are_nan() -> None:
    per_day, precision, recall = alert_figures(SCORES, np.zeros(8, dtype=bool), 2, 0.99)
    assert per_day == 0.0
    assert math.isnan(precision)
    assert math.isnan(recall)
    choice = fixed(0.99, SCORES, np.zeros(8, dtype=bool), days=2, chosen_on="v")
    assert choice.as_dict()["precision"] is None  # JSON has no NaN


def test_bad_objectives_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        by_alert_budget(SCORES, LABELS, days=1, alerts_per_day=0, chosen_on="v")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        by_precision_target(SCORES, LABELS, days=1, precision=0, chosen_on="v")
    with pytest.raises(ValueError, match="no scores"):
        by_alert_budget(
            np.zeros(0), np.zeros(0, dtype=bool), days=1, alerts_per_day=1, chosen_on="v"
        )
