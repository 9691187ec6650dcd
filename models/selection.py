"""Model selection: hyper-parameters compared on prequential validation folds.

Each candidate is fitted on the train period of every fold and assessed on its test
period; the candidate with the best mean Average Precision wins (Card Precision@k breaks
ties). Average Precision decides because it summarises the whole ranking where frauds
are rare; CP@k, what investigators see, is noisier over a few weeks (it moves in steps of
1/k per day) and so only breaks ties.

The folds are those of `models.protocol.prequential_splits` started at
``Protocol.validation_start``: every validation period ends before the assessed train
period begins, so selection never sees test data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from models.estimators import ModelKind, Params, feature_matrix, fit, fraud_labels, fraud_scores
from models.evaluation import Assessment, assess
from models.protocol import Split


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's figures on the validation folds.

    Attributes:
        params: The hyper-parameters.
        validation: Mean assessment over the folds.
        folds: Assessment per fold, most recent first.
    """

    params: dict[str, Any]
    validation: Assessment
    folds: tuple[Assessment, ...]


@dataclass(frozen=True)
class FirstFoldScores:
    """Scores of the most recent validation fold, kept to choose the threshold on.

    Attributes:
        split: The fold.
        scores: One score per row of ``split.test``.
    """

    split: Split
    scores: npt.NDArray[np.float64] = field(repr=False)


@dataclass(frozen=True)
class Selection:
    """The outcome of model selection.

    Attributes:
        kind: The model family.
        candidates: Every candidate's results, in the order tried.
        best: The chosen candidate.
        first_fold: The chosen candidate's scores on the most recent fold.
    """

    kind: ModelKind
    candidates: tuple[CandidateResult, ...]
    best: CandidateResult
    first_fold: FirstFoldScores


def validate(
    kind: ModelKind,
    params: Params,
    folds: Sequence[Split],
    feature_names: Sequence[str],
    seed: int,
    k: int,
) -> tuple[CandidateResult, FirstFoldScores]:
    """Fit and assess one candidate on every fold.

    Returns:
        Its results, and its scores on the first (most recent) fold.
    """
    if not folds:
        raise ValueError("validation needs at least one fold")
    assessments: list[Assessment] = []
    first: FirstFoldScores | None = None
    for fold in folds:
        estimator = fit(
            kind,
            params,
            feature_matrix(fold.train, feature_names),
            fraud_labels(fold.train),
            seed,
        )
        scores = fraud_scores(estimator, feature_matrix(fold.test, feature_names))
        assessments.append(assess(fold.test, scores, k))
        if first is None:
            first = FirstFoldScores(fold, scores)
    assert first is not None
    result = CandidateResult(dict(params), Assessment.mean(assessments), tuple(assessments))
    return result, first


def select(
    kind: ModelKind,
    candidates: Sequence[Params],
    folds: Sequence[Split],
    feature_names: Sequence[str],
    seed: int,
    k: int,
) -> Selection:
    """Validate every candidate and keep the best (mean AP, then mean CP@k).

    Raises:
        ValueError: No candidates or no folds.
    """
    if not candidates:
        raise ValueError("model selection needs at least one candidate")
    results: list[CandidateResult] = []
    best: tuple[CandidateResult, FirstFoldScores] | None = None
    for params in candidates:
        result, first = validate(kind, params, folds, feature_names, seed, k)
        results.append(result)
        if best is None or _rank(result) > _rank(best[0]):
            best = (result, first)
    assert best is not None
    return Selection(kind, tuple(results), best[0], best[1])


def _rank(result: CandidateResult) -> tuple[float, float]:
    ap = result.validation.average_precision
    return (-1.0 if np.isnan(ap) else ap, result.validation.card_precision)
