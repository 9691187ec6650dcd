"""Alert reasons: which features pushed a transaction's fraud score up, and by how much.

Method: occlusion against a baseline. For an alerted row x and each feature i,

    contribution_i = score(x) - score(x with feature i replaced by baseline_i)

where the baseline is each feature's median over the model's training rows
(`models.training.feature_baseline`, stored in the registry metadata). A contribution is
the drop in fraud score, in probability points, if that one feature had taken a typical
value while the others kept theirs: 0.40 means "with an ordinary amount this transaction
would have scored 0.40 lower". The reasons of a row are its `top_k` features with a
positive contribution, largest first; a row may have fewer, or none (no single feature
lowers its score when made typical: the score comes from a combination).

Why occlusion rather than SHAP:

- Model-agnostic: it needs ``predict_proba`` only, so the logistic regression pipeline,
  the random forest and histogram gradient boosting are explained the same way, in the
  same units. TreeSHAP covers only the two tree kinds (the scaled logistic pipeline would
  need another explainer, so the kinds' reasons would not be comparable), and KernelSHAP,
  the model-agnostic variant, needs hundreds of model evaluations per row.
- No dependency: ``shap`` is not installed, pulls in numba and llvmlite, and would be one
  more library on the workers' hot path whose versions must match the artifacts'.
- Cost: exactly one extra ``predict_proba`` per batch, over k * n rows for k alerts and n
  features, built with numpy (measured below).

Known limit: correlated features share credit poorly. When two features carry the same
signal (the 1-day and 7-day spend of a card, say), making one typical leaves the other to
keep the score high, so each gets a small contribution and neither may be listed, although
together they explain the alert; and the occluded row can be one no real transaction has
(a 1-day spend above the 7-day spend), where the model's score means little. Interactions
are likewise seen one feature at a time.
Contributions also do not sum to ``score - score(baseline)``, as SHAP values would.

Threads: the explainer calls the estimator it is given, typically the one a
`models.scoring.BatchScorer` already set to ``n_jobs=1`` with the process's native pools
pinned to one thread; it changes no estimator setting itself.

Measured cost (``bench/bench_reasons.py``: handbook-size simulated data, each kind's
baseline model, the 20 default features, one thread, alerts drawn from the top 1 % of the
test week's scores), median microseconds per alert for k alerts per ``explain`` call,
explanation only (scoring not included); load average 1.7-2.0 on a shared 2-core machine,
two runs within 10 % of each other:

    ==========================  =======  ========  =========
    model                        k = 1    k = 10   k = 100
    ==========================  =======  ========  =========
    logistic_regression            272        31          6
    random_forest                4 480       569        107
    hist_gradient_boosting         724       134         74
    ==========================  =======  ========  =========

At k = 1 the cost is one ``predict_proba`` call on 20 rows, that is the model's fixed
overhead per call (100 trees visited one by one in the forest); the explainer's own numpy
and Python work is about 23 us per call at k = 1 and 2.6 us per alert at k = 100. With
~1 % alerts a worker's batch holds about one alert per 100 transactions, so reasons
add roughly one small ``predict_proba`` call per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from models.fastpath import positive_proba
from models.registry import LoadedModel

Matrix = npt.NDArray[np.float64]

#: Reasons listed per alert unless the caller asks otherwise.
DEFAULT_TOP_K = 3


class Reason(NamedTuple):
    """One feature that pushed a score up (streams turns it into an ``AlertReason``).

    A named tuple rather than a dataclass: a few are built per alert on the hot path, and
    a tuple is the cheapest immutable record Python builds.

    Attributes:
        feature: The feature's name, as in the model's feature list.
        value: The feature's value in the alerted row.
        contribution: The score minus the score with this feature at its baseline value;
            always > 0 for a listed reason.
    """

    feature: str
    value: float
    contribution: float


class MissingBaselineError(ValueError):
    """The model's metadata has no feature baseline (registered before it was stored)."""


class ReasonExplainer:
    """Names the features that pushed each alerted row's score up (see the module doc).

    Args:
        estimator: A fitted classifier with ``predict_proba``; column 1 is the fraud score.
        feature_names: Its inputs, in the order of the rows' columns.
        baseline: Each feature's typical value, in the same order: what a feature is
            replaced with to measure its contribution.
        top_k: At most this many reasons per row.

    Raises:
        ValueError: No features, a baseline of another length or with non-finite values,
            or ``top_k`` < 1.
    """

    def __init__(
        self,
        estimator: Any,
        feature_names: Sequence[str],
        baseline: Sequence[float],
        *,
        top_k: int = DEFAULT_TOP_K,
    ) -> None:
        names = tuple(feature_names)
        values = np.array(baseline, dtype=np.float64)
        if not names:
            raise ValueError("an explainer needs at least one feature")
        if values.shape != (len(names),):
            raise ValueError(
                f"the baseline has shape {values.shape}, expected one value for each of "
                f"the {len(names)} features"
            )
        if not np.all(np.isfinite(values)):
            raise ValueError(f"the baseline holds non-finite values: {values.tolist()}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        values.flags.writeable = False
        self.estimator = estimator
        self._positive_proba = positive_proba(estimator)
        self.feature_names = names
        self.baseline = values
        self.top_k = top_k
        self._diagonal = np.arange(len(names))

    @classmethod
    def for_model(cls, model: LoadedModel, *, top_k: int = DEFAULT_TOP_K) -> ReasonExplainer:
        """The explainer of a registry model, with the baseline stored at its training.

        A model registered before baselines were stored has none, and this raises rather
        than guess one: a made-up baseline (zeros, say) would give confident-looking but
        meaningless reasons. Such a model's alerts go out without reasons until it is
        retrained; a caller that does have a baseline for it uses the constructor.

        Raises:
            MissingBaselineError: The metadata has no ``feature_baseline``.
        """
        metadata = model.metadata
        if metadata.feature_baseline is None:
            raise MissingBaselineError(
                f"model {metadata.version} has no feature baseline in its metadata (it was "
                "registered before baselines were stored): retrain it to explain its alerts, "
                "or build ReasonExplainer(estimator, feature_names, baseline) with one"
            )
        return cls(model.estimator, metadata.feature_names, metadata.feature_baseline, top_k=top_k)

    def explain(self, rows: Matrix, scores: npt.NDArray[np.float64]) -> list[list[Reason]]:
        """The reasons of each row, in row order: one ``predict_proba`` call in all.

        Args:
            rows: The alerted feature vectors, shape ``(k, features)``.
            scores: Their fraud scores as the batch scorer computed them (not recomputed).

        Returns:
            For each row, up to ``top_k`` reasons with a positive contribution, largest
            first (ties in feature order); an empty list for a row with none.

        Raises:
            ValueError: ``rows`` is not ``(k, features)`` or ``scores`` not ``(k,)``.
        """
        n = len(self.feature_names)
        if rows.ndim != 2 or rows.shape[1] != n:
            raise ValueError(f"expected rows of shape (k, {n}), got {rows.shape}")
        k = len(rows)
        if scores.shape != (k,):
            raise ValueError(f"expected {k} scores, got shape {scores.shape}")
        if not k:
            return []
        # Row r * n + i is row r with feature i at its baseline: k blocks of n copies
        # whose diagonals are overwritten.
        occluded = np.repeat(np.asarray(rows, dtype=np.float64), n, axis=0)
        blocks = occluded.reshape(k, n, n)
        blocks[:, self._diagonal, self._diagonal] = self.baseline
        occluded_scores = self._positive_proba(occluded).reshape(k, n)
        contributions = scores[:, None] - occluded_scores
        # A feature already at its baseline changes nothing: exactly 0, whatever float
        # noise scoring a differently shaped batch may give.
        contributions[rows == self.baseline] = 0.0
        top = min(self.top_k, n)
        order = np.argsort(-contributions, axis=1, kind="stable")[:, :top]
        best = np.take_along_axis(contributions, order, axis=1).tolist()
        values = np.take_along_axis(rows, order, axis=1).tolist()
        names = self.feature_names
        return [
            [
                Reason(names[i], value, contribution)
                for i, value, contribution in zip(row_order, row_values, row_best, strict=True)
                if contribution > 0
            ]
            for row_order, row_values, row_best in zip(order.tolist(), values, best, strict=True)
        ]
