"""The handbook's performance metrics: AUC ROC, Average Precision, Card Precision@k.

Pure functions over arrays (no I/O, no dataset columns), so each can be checked against
examples computed by hand. The definitions follow Le Borgne et al., "Reproducible Machine
Learning for Credit Card Fraud Detection — Practical Handbook", chapter 4:

- AUC ROC and Average Precision are threshold-free and computed over all transactions of
  the assessed period, with scikit-learn's definitions (the handbook's).
- Card Precision@k is what a team of investigators who can check k cards a day sees: for
  each day, every card (customer) gets the highest score of its transactions that day and
  is compromised when any of them is a fraud; the k highest-scoring cards are checked and
  the share that is compromised is that day's precision. A compromised card found on one
  day is blocked, so it is left out of later days. The metric is the mean over days.
  A day with fewer than k cards still divides by k: unused investigator capacity counts
  as lost, as in the handbook.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, roc_auc_score

Scores = npt.NDArray[np.float64]
Labels = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class CardPrecision:
    """Card Precision@k of a period, with the per-day figures it averages.

    Attributes:
        k: Cards checked per day.
        per_day: Precision of each day, in day order.
        compromised_per_day: Compromised cards still undetected at the start of each day:
            the most that day's k checks could find.
        mean: The mean of ``per_day`` (the metric); 0.0 for a period without days.
    """

    k: int
    per_day: tuple[float, ...]
    compromised_per_day: tuple[int, ...]
    mean: float


def auc_roc(labels: Labels, scores: Scores) -> float:
    """Area under the ROC curve: the chance that a random fraud outranks a random genuine.

    Args:
        labels: True for frauds.
        scores: Higher means more suspicious.

    Returns:
        The AUC; NaN when the labels hold only one class (the AUC is undefined then,
        and NaN keeps a small test period from failing a whole evaluation).
    """
    labels = np.asarray(labels, dtype=np.bool_)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def average_precision(labels: Labels, scores: Scores) -> float:
    """Average Precision: precision averaged over the recall steps of the ranking.

    It summarises the precision-recall curve, which, unlike the ROC curve, reflects how
    rare frauds are: the metric that matters when alerts cost investigator time.

    Args:
        labels: True for frauds.
        scores: Higher means more suspicious.

    Returns:
        The Average Precision; NaN when there is no fraud.
    """
    labels = np.asarray(labels, dtype=np.bool_)
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, scores))


def card_precision_at_k(
    days: npt.NDArray[np.int64],
    cards: npt.NDArray[np.int64],
    labels: Labels,
    scores: Scores,
    k: int = 100,
) -> CardPrecision:
    """Card Precision@k, per day and averaged, with detected cards removed from later days.

    Cards with equal highest scores are ranked by card number (ascending), so the result
    is deterministic; the handbook leaves that order to pandas' sort.

    Args:
        days: Day of each transaction (any integer day number; days are taken in
            increasing order).
        cards: Card (customer) of each transaction, as an integer code.
        labels: True for frauds.
        scores: Higher means more suspicious.
        k: Cards investigators check per day.

    Returns:
        The per-day precisions and their mean.

    Raises:
        ValueError: k is not positive, or the arrays differ in length.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    days = np.asarray(days, dtype=np.int64)
    cards = np.asarray(cards, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.bool_)
    scores = np.asarray(scores, dtype=np.float64)
    if not len(days) == len(cards) == len(labels) == len(scores):
        raise ValueError("days, cards, labels and scores must have the same length")

    detected: set[int] = set()
    per_day: list[float] = []
    compromised: list[int] = []
    for day in np.unique(days):
        in_day = days == day
        day_cards, inverse = np.unique(cards[in_day], return_inverse=True)
        card_score = np.full(len(day_cards), -np.inf)
        np.maximum.at(card_score, inverse, scores[in_day])
        card_fraud = np.zeros(len(day_cards), dtype=np.bool_)
        np.logical_or.at(card_fraud, inverse, labels[in_day])

        undetected = np.array([int(c) not in detected for c in day_cards], dtype=np.bool_)
        day_cards = day_cards[undetected]
        card_score = card_score[undetected]
        card_fraud = card_fraud[undetected]
        compromised.append(int(card_fraud.sum()))

        # lexsort: last key first; cards ascending break ties of descending scores.
        top = np.lexsort((day_cards, -card_score))[:k]
        found = day_cards[top][card_fraud[top]]
        per_day.append(len(found) / k)
        detected.update(int(c) for c in found)

    mean = float(np.mean(per_day)) if per_day else 0.0
    return CardPrecision(k, tuple(per_day), tuple(compromised), mean)
