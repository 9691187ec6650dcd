"""The batch scorer: feature vectors in, fraud scores and alert flags out.

Built for the score agent's hot path: it receives a micro-batch (``stream.take``) of
feature vectors, already in the model's order, and makes exactly one ``predict_proba``
call for the whole batch; no per-row Python, no logging per event.

Threads: a worker process is one event loop on one core, and several workers share a
machine. Native thread pools (OpenBLAS, OpenMP in histogram gradient boosting) and
joblib (random forests) would otherwise start a thread per core for every batch and fight
the other workers for the cores; on small batches the start-up costs more than the work.
So the scorer sets ``n_jobs=1`` on the estimator and limits every native pool of the
process to one thread when it is built (`pin_thread_pools`), once, instead of around each
call: entering and leaving ``threadpool_limits`` costs tens of microseconds per call.

The logistic regression is scored without scikit-learn's per-call checks, by the same
arithmetic, verified equal when the scorer is built (``models.fastpath``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from threadpoolctl import threadpool_limits

from models.estimators import feature_matrix
from models.fastpath import positive_proba
from models.registry import LoadedModel, check_features

Matrix = npt.NDArray[np.float64]


def pin_thread_pools() -> Any:
    """Limit every native thread pool of this process to one thread.

    Returns:
        The threadpoolctl limiter; its ``restore_original_limits()`` undoes the pinning
        (tests use it; a worker never does).
    """
    return threadpool_limits(limits=1)


class BatchScorer:
    """Scores batches of feature vectors with one verified model.

    Args:
        model: A model loaded from the registry (integrity and types checked).
        feature_names: The running feature spec's names, in vector order: the scorer
            refuses a model trained on other features.
        threshold: Overrides the threshold chosen at training (`models.threshold`).
        pin_threads: Pin the process's native thread pools to one thread (see the
            module docstring). Leave on inside a worker.

    Raises:
        models.registry.FeatureMismatchError: The model's features differ from
            ``feature_names``.
        ValueError: The threshold override is outside [0, 1].
    """

    def __init__(
        self,
        model: LoadedModel,
        feature_names: Sequence[str],
        *,
        threshold: float | None = None,
        pin_threads: bool = True,
    ) -> None:
        check_features(model.metadata, feature_names)
        if threshold is not None and not 0 <= threshold <= 1:
            raise ValueError(f"a threshold must be in [0, 1], got {threshold}")
        self.model = model
        self.feature_names = tuple(feature_names)
        self.threshold = model.metadata.threshold_value if threshold is None else threshold
        self._estimator = model.estimator
        if "n_jobs" in self._estimator.get_params():
            self._estimator.set_params(n_jobs=1)
        self._thread_limits = pin_thread_pools() if pin_threads else None
        self._positive_proba = positive_proba(self._estimator)

    @property
    def version(self) -> str:
        """The scoring model's version id (alerts carry it)."""
        return self.model.metadata.version

    def score_batch(self, vectors: Matrix) -> npt.NDArray[np.float64]:
        """Fraud scores in [0, 1] of a batch: one ``predict_proba`` call.

        Args:
            vectors: Shape ``(rows, features)``, columns in ``feature_names`` order.

        Raises:
            ValueError: The batch does not have one column per feature.
        """
        if vectors.ndim != 2 or vectors.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected a batch of shape (rows, {len(self.feature_names)}), got {vectors.shape}"
            )
        if not len(vectors):
            return np.zeros(0, dtype=np.float64)
        return self._positive_proba(vectors)

    def score_frame(self, frame: pl.DataFrame) -> npt.NDArray[np.float64]:
        """Scores of a feature frame, columns picked by name in the model's order."""
        return self.score_batch(feature_matrix(frame, self.feature_names))

    def alerts(self, scores: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Which scores raise an alert: score >= threshold."""
        return scores >= self.threshold

    def close(self) -> None:
        """Undo the thread pinning (for tests and notebooks; a worker never needs it)."""
        if self._thread_limits is not None:
            self._thread_limits.restore_original_limits()
            self._thread_limits = None
