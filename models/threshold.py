"""The alert threshold: chosen on validation scores for a stated objective.

A model ranks transactions; the threshold turns the ranking into alerts (score >=
threshold). It is chosen on validation data, never on the test period it is then
assessed on, for one of these objectives:

- **alert budget** (default): at most N alerts per day on average, the capacity of the
  team that handles them (the handbook's investigators check 100 cards a day). The
  lowest threshold whose alerts fit the budget: the most frauds that capacity can catch.
- **precision target**: the lowest threshold whose alerts are at least this share
  frauds, for teams that act on alerts automatically (card blocking) and so need a
  bounded false-alarm rate.
- **fixed**: a value given by a person, overriding both; its validation figures are still
  recorded so the metadata says what it costs.

Scores come from models whose outputs may be reweighted (class weights) and so not
calibrated probabilities: a threshold is only meaningful for the model it was chosen
for, which is why it lives in that model's metadata.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

Scores = npt.NDArray[np.float64]
Labels = npt.NDArray[np.bool_]

#: Alerts per day when nothing else is asked: the handbook's 100 checks a day.
DEFAULT_ALERTS_PER_DAY = 100.0


class ThresholdError(ValueError):
    """No threshold meets the objective on the validation data."""


class Objective(enum.StrEnum):
    """What a threshold is chosen for."""

    ALERT_BUDGET = "alert_budget"
    PRECISION_TARGET = "precision_target"
    FIXED = "fixed"


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    """A threshold, the objective it meets, and what it gives on the data it was chosen on.

    Attributes:
        value: Alert when score >= value.
        objective: How the value was chosen.
        target: Alerts per day (budget), precision (target), or the value itself (fixed).
        chosen_on: The data the value was chosen on, in words.
        alerts_per_day: Mean daily alerts at this threshold on that data.
        precision: Share of those alerts that are frauds (NaN without alerts).
        recall: Share of the frauds alerted on (NaN without frauds).
    """

    value: float
    objective: Objective
    target: float
    chosen_on: str
    alerts_per_day: float
    precision: float
    recall: float

    def as_dict(self) -> dict[str, object]:
        """Plain values for JSON metadata."""
        out = asdict(self)
        out["objective"] = self.objective.value
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


def alert_figures(
    scores: Scores, labels: Labels, days: int, threshold: float
) -> tuple[float, float, float]:
    """Alerts per day, precision and recall of alerting at ``threshold``.

    Args:
        scores: Scores of the period.
        labels: True for frauds.
        days: Calendar days of the period (at least 1).
        threshold: Alert when score >= threshold.
    """
    alerted = scores >= threshold
    hits = int((alerted & labels).sum())
    alerts = int(alerted.sum())
    frauds = int(labels.sum())
    return (
        alerts / max(days, 1),
        hits / alerts if alerts else float("nan"),
        hits / frauds if frauds else float("nan"),
    )


def by_alert_budget(
    scores: Scores, labels: Labels, days: int, alerts_per_day: float, chosen_on: str
) -> ThresholdChoice:
    """The lowest threshold whose mean daily alerts on the data fit the budget.

    When the top scores tie beyond the budget (a random forest often gives many
    transactions exactly 1.0), no threshold can fit it: the top score itself is chosen,
    so the model still alerts on what it is surest of, and the recorded alerts per day
    show the overrun.

    Raises:
        ValueError: The budget or the number of days is not positive, or no scores.
    """
    if not alerts_per_day > 0 or days < 1:
        raise ValueError("the alert budget and the number of days must be positive")
    ordered = _descending(scores)
    allowed = math.floor(alerts_per_day * days)
    if allowed >= len(ordered):
        value = float(ordered[-1])
    else:
        cut = ordered[allowed]  # the first score that must not alert
        above = ordered[:allowed][ordered[:allowed] > cut]
        value = float(above[-1]) if len(above) else float(ordered[0])
    return _choice(value, Objective.ALERT_BUDGET, alerts_per_day, scores, labels, days, chosen_on)


def by_precision_target(
    scores: Scores, labels: Labels, days: int, precision: float, chosen_on: str
) -> ThresholdChoice:
    """The lowest threshold whose alerts on the data are at least ``precision`` frauds.

    Raises:
        ValueError: The target is not in (0, 1], or no scores.
        ThresholdError: No threshold reaches the target on this data.
    """
    if not 0 < precision <= 1:
        raise ValueError(f"the precision target must be in (0, 1], got {precision}")
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    if not len(ordered):
        raise ValueError("no scores to choose a threshold on")
    hits = np.cumsum(labels[order])
    # Only the last position of each run of equal scores is a threshold we can set.
    ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    reached = ends[hits[ends] / (ends + 1) >= precision]
    if not len(reached):
        best = float(np.max(hits[ends] / (ends + 1)))
        raise ThresholdError(
            f"no threshold reaches precision {precision:.3f} on {chosen_on} "
            f"(the best is {best:.3f})"
        )
    value = float(ordered[reached[-1]])
    return _choice(value, Objective.PRECISION_TARGET, precision, scores, labels, days, chosen_on)


def fixed(
    value: float, scores: Scores, labels: Labels, days: int, chosen_on: str
) -> ThresholdChoice:
    """A threshold given by a person, with its figures on the validation data.

    Raises:
        ValueError: The value is not in [0, 1].
    """
    if not 0 <= value <= 1:
        raise ValueError(f"a threshold must be in [0, 1], got {value}")
    return _choice(value, Objective.FIXED, value, scores, labels, days, chosen_on)


def _descending(scores: Scores) -> Scores:
    if not len(scores):
        raise ValueError("no scores to choose a threshold on")
    return np.sort(scores)[::-1]


def _choice(
    value: float,
    objective: Objective,
    target: float,
    scores: Scores,
    labels: Labels,
    days: int,
    chosen_on: str,
) -> ThresholdChoice:
    per_day, precision, recall = alert_figures(scores, labels, days, value)
    return ThresholdChoice(value, objective, target, chosen_on, per_day, precision, recall)
