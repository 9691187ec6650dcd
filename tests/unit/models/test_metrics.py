"""The handbook metrics against examples worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.metrics import auc_roc, average_precision, card_precision_at_k


def test_auc_counts_the_pairs_a_fraud_wins() -> None:
    # Pairs (fraud, genuine): (.9,.8) win, (.9,.3) win, (.4,.8) lose, (.4,.3) win -> 3/4.
    labels = np.array([True, False, True, False])
    scores = np.array([0.9, 0.8, 0.4, 0.3])
    assert auc_roc(labels, scores) == pytest.approx(0.75)


def test_auc_counts_a_tie_as_half() -> None:
    assert auc_roc(np.array([True, False]), np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_auc_is_nan_with_one_class() -> None:
    assert math.isnan(auc_roc(np.array([False, False]), np.array([0.1, 0.2])))


def test_average_precision_averages_precision_at_each_fraud() -> None:
    # Ranking: P N P N. Precision at the 1st fraud 1/1, at the 2nd 2/3; each recall step 1/2.
    labels = np.array([True, False, True, False])
    scores = np.array([0.9, 0.8, 0.4, 0.3])
    assert average_precision(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_average_precision_is_nan_without_frauds() -> None:
    assert math.isnan(average_precision(np.array([False]), np.array([0.3])))


# Two days, cards 1 (A), 2 (B), 3 (C), 4 (D), k = 2.
# Day 0: A max .9 and has a fraud; B .8 genuine; C .7 fraud; D .1 fraud.
#        top 2 = A, B -> 1 compromised -> 0.5; A is detected.
# Day 1: A .99 fraud (already detected: removed); D .65 fraud; C .6 genuine.
#        top 2 = D, C -> 1 compromised -> 0.5.  Mean 0.5.
#        Without the removal, top 2 would be A, D -> 1.0, mean 0.75.
DAYS = np.array([0, 0, 0, 0, 0, 1, 1, 1])
CARDS = np.array([1, 1, 2, 3, 4, 1, 4, 3])
LABELS = np.array([True, False, False, True, True, True, True, False])
SCORES = np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.99, 0.65, 0.6])


def test_card_precision_by_hand() -> None:
    result = card_precision_at_k(DAYS, CARDS, LABELS, SCORES, k=2)
    assert result.per_day == (0.5, 0.5)
    assert result.mean == pytest.approx(0.5)
    # Undetected compromised cards at the start of each day: A, C, D; then D only.
    assert result.compromised_per_day == (3, 1)


def test_card_precision_removes_cards_detected_on_earlier_days() -> None:
    # Shuffling rows changes nothing: days are processed in order, cards by max score.
    order = np.random.default_rng(3).permutation(len(DAYS))
    result = card_precision_at_k(DAYS[order], CARDS[order], LABELS[order], SCORES[order], k=2)
    assert result.per_day == (0.5, 0.5)


def test_card_precision_divides_by_k_on_a_quiet_day() -> None:
    # Two compromised cards, k = 3: the unused check still counts -> 2/3.
    result = card_precision_at_k(
        np.array([5, 5]), np.array([1, 2]), np.array([True, True]), np.array([0.3, 0.4]), k=3
    )
    assert result.per_day[0] == pytest.approx(2 / 3)


def test_card_precision_breaks_score_ties_by_card() -> None:
    # Cards 7 and 9 tie; k = 1 checks card 7 (the lower number), which is genuine.
    result = card_precision_at_k(
        np.array([0, 0]), np.array([9, 7]), np.array([True, False]), np.array([0.5, 0.5]), k=1
    )
    assert result.per_day == (0.0,)


def test_card_precision_uses_the_max_score_and_any_fraud_of_a_card() -> None:
    # Card 1: a genuine .95 and a fraud .05 -> score .95, compromised; card 2: .9 genuine.
    result = card_precision_at_k(
        np.zeros(3, dtype=np.int64),
        np.array([1, 1, 2]),
        np.array([False, True, False]),
        np.array([0.95, 0.05, 0.9]),
        k=1,
    )
    assert result.per_day == (1.0,)


def test_card_precision_of_nothing_is_zero() -> None:
    empty = np.zeros(0, dtype=np.int64)
    result = card_precision_at_k(empty, empty, empty.astype(bool), empty.astype(float), k=100)
    assert result.mean == 0.0
    assert result.per_day == ()


def test_card_precision_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="k must be positive"):
        card_precision_at_k(DAYS, CARDS, LABELS, SCORES, k=0)
    with pytest.raises(ValueError, match="same length"):
        card_precision_at_k(DAYS[:2], CARDS, LABELS, SCORES, k=1)
