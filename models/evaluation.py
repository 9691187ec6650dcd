"""Assessing scores on a protocol period: the three handbook metrics, plus alert counts.

`models.metrics` holds the pure metric math; this module feeds it from the frames of
`models.protocol` (labels, calendar days, customers as cards) and bundles the figures a
report, the registry metadata and model selection need.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from features import dataset
from models.metrics import auc_roc, average_precision, card_precision_at_k
from models.protocol import DAY, with_day

#: Cards investigators check per day in Card Precision@k: the handbook's 100.
TOP_K_CARDS = 100


@dataclass(frozen=True, slots=True)
class Assessment:
    """The handbook's metrics on one assessed period.

    Attributes:
        auc_roc: Area under the ROC curve.
        average_precision: Average Precision.
        card_precision: Card Precision@k, mean over days.
        k: The k of Card Precision@k.
        transactions: Transactions assessed.
        frauds: Frauds among them.
        days: Calendar days assessed.
    """

    auc_roc: float
    average_precision: float
    card_precision: float
    k: int
    transactions: int
    frauds: int
    days: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain values for JSON metadata (where `models.training` writes NaN as None)."""
        return asdict(self)

    @classmethod
    def mean(cls, assessments: list[Assessment]) -> Assessment:
        """The mean of several assessments (prequential folds); counts are summed."""
        if not assessments:
            raise ValueError("no assessments to average")
        return cls(
            auc_roc=_nanmean([a.auc_roc for a in assessments]),
            average_precision=_nanmean([a.average_precision for a in assessments]),
            card_precision=float(np.mean([a.card_precision for a in assessments])),
            k=assessments[0].k,
            transactions=sum(a.transactions for a in assessments),
            frauds=sum(a.frauds for a in assessments),
            days=sum(a.days for a in assessments),
        )


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def assess(
    frame: pl.DataFrame, scores: npt.NDArray[np.float64], k: int = TOP_K_CARDS
) -> Assessment:
    """The handbook's metrics of ``scores`` on the transactions of ``frame``.

    Args:
        frame: An assessed period (a split's test or validation set), with ``tx_time``,
            ``customer_id`` and ``is_fraud``; rows in the order of ``scores``.
        scores: One score per row, higher is more suspicious.
        k: Cards checked per day.

    Raises:
        ValueError: The number of scores differs from the number of rows.
    """
    if len(scores) != frame.height:
        raise ValueError(f"{len(scores)} scores for {frame.height} transactions")
    frame = with_day(frame)
    labels = frame[dataset.IS_FRAUD].fill_null(False).to_numpy().astype(np.bool_)
    days = frame[DAY].cast(pl.Int64).to_numpy()
    # Dense ranks of the ids: integer cards that sort like the ids, for deterministic ties.
    cards = frame[dataset.CUSTOMER_ID].rank("dense").cast(pl.Int64).to_numpy()
    card_precision = card_precision_at_k(days, cards, labels, scores, k)
    return Assessment(
        auc_roc=auc_roc(labels, scores),
        average_precision=average_precision(labels, scores),
        card_precision=card_precision.mean,
        k=k,
        transactions=frame.height,
        frauds=int(labels.sum()),
        days=len(card_precision.per_day),
    )
