"""The handbook's published test results, and our results printed beside them.

Le Borgne et al., "Reproducible Machine Learning for Credit Card Fraud Detection —
Practical Handbook", on its own simulated data (5,000 customers, 10,000 terminals,
2018-04-01 + 183 days): baselines trained 2018-07-25..07-31 and tested 2018-08-08..08-14
(chapter 3), and the best models after model selection on prequential folds (chapter 5).
Our boosting model (histogram gradient boosting) is compared with its XGBoost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

from models.estimators import ModelKind
from models.evaluation import Assessment

#: The handbook's split: first train day (the test week starts 14 days later).
HANDBOOK_TRAIN_START: Final = date(2018, 7, 25)


@dataclass(frozen=True, slots=True)
class PublishedResult:
    """One published test result.

    Attributes:
        model: The handbook's name for the model.
        auc_roc: AUC ROC.
        average_precision: Average Precision.
        card_precision: Card Precision@100.
    """

    model: str
    auc_roc: float
    average_precision: float
    card_precision: float


#: Chapter 3 baselines, default hyper-parameters.
PUBLISHED_BASELINES: Final[dict[ModelKind, PublishedResult]] = {
    ModelKind.LOGISTIC_REGRESSION: PublishedResult("logistic regression", 0.871, 0.606, 0.291),
    ModelKind.RANDOM_FOREST: PublishedResult("random forest", 0.867, 0.658, 0.287),
    ModelKind.HIST_GRADIENT_BOOSTING: PublishedResult("XGBoost", 0.862, 0.639, 0.273),
}

#: Chapter 5, best after model selection.
PUBLISHED_SELECTED: Final[dict[ModelKind, PublishedResult]] = {
    ModelKind.RANDOM_FOREST: PublishedResult("random forest (selected)", 0.870, 0.678, 0.299),
    ModelKind.HIST_GRADIENT_BOOSTING: PublishedResult("XGBoost (selected)", 0.869, 0.687, 0.303),
}


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    """Our result on one line, with the handbook's counterpart if it has one.

    Attributes:
        label: Our model, as the table shows it.
        ours: Our assessment.
        published: The handbook's figures to compare with.
    """

    label: str
    ours: Assessment
    published: PublishedResult | None


def comparison_table(rows: Sequence[ComparisonRow], title: str = "") -> str:
    """A plain-text table: our AUC / AP / CP@k beside the handbook's, with differences."""
    header = (
        f"{'model':<34} {'AUC':>6} {'AP':>6} {'CP@k':>6} | "
        f"{'handbook':<26} {'AUC':>6} {'AP':>6} {'CP@100':>6} | "
        f"{'dAUC':>6} {'dAP':>6} {'dCP':>6}"
    )
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for row in rows:
        ours = row.ours
        line = (
            f"{row.label:<34} {_num(ours.auc_roc)} {_num(ours.average_precision)} "
            f"{_num(ours.card_precision)} | "
        )
        published = row.published
        if published is None:
            line += f"{'-':<26} {'':>6} {'':>6} {'':>6} | {'':>6} {'':>6} {'':>6}"
        else:
            line += (
                f"{published.model:<26} {_num(published.auc_roc)} "
                f"{_num(published.average_precision)} {_num(published.card_precision)} | "
                f"{_delta(ours.auc_roc, published.auc_roc)} "
                f"{_delta(ours.average_precision, published.average_precision)} "
                f"{_delta(ours.card_precision, published.card_precision)}"
            )
        lines.append(line.rstrip())
    return "\n".join(lines)


def _num(value: float) -> str:
    return f"{'nan':>6}" if math.isnan(value) else f"{value:>6.3f}"


def _delta(ours: float, theirs: float) -> str:
    return f"{'nan':>6}" if math.isnan(ours) else f"{ours - theirs:>+6.3f}"
