"""Tiny registered models for the tests of promotion, model control and fallback.

Shared by the unit and integration tiers (``tests`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models.estimators import ModelKind
from models.registry import ModelRegistry


def register_tiny_model(
    registry: ModelRegistry, day: int, names: Sequence[str], rows: int = 40
) -> str:
    """Register a logistic regression on ``names``, trained on noise; distinct per ``day``.

    Its version carries ``day`` (May 2024) as its creation date, so versions sort by day.
    """
    rng = np.random.default_rng(day)
    x = rng.normal(size=(rows, len(names)))
    model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression())])
    model.fit(x, x[:, 0] > 0)
    return registry.register(
        model,
        kind=ModelKind.LOGISTIC_REGRESSION,
        feature_names=tuple(names),
        threshold={"value": 0.5, "objective": "fixed"},
        metrics={},
        params={},
        training={},
        created_at=datetime(2024, 5, day, tzinfo=UTC),
    ).version
