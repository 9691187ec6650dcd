"""models.fastpath: the fast logistic-regression scores equal predict_proba bit for bit."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from models import fastpath
from models.fastpath import positive_proba


def data(rows: int = 2000, width: int = 20, seed: int = 7) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, width)) * 10.0 ** rng.integers(-1, 3, width)
    y = (x[:, 0] / (10.0 * abs(x[0, 0]) + 1.0) + rng.standard_normal(rows) > 1.2).astype(int)
    return x, y


def lr(**scaler: bool) -> Pipeline:
    x, y = data()
    model = Pipeline(
        [("scale", StandardScaler(**scaler)), ("classify", LogisticRegression(max_iter=5000))]
    )
    return model.fit(x, y)


@pytest.mark.parametrize(
    "scaler", [{}, {"with_mean": False}, {"with_std": False}], ids=["both", "no-mean", "no-std"]
)
@pytest.mark.parametrize("rows", [1, 3, 17, 100, 500, 2000])
def test_the_fast_path_equals_predict_proba_exactly(scaler: dict[str, bool], rows: int) -> None:
    model = lr(**scaler)
    score = positive_proba(model)
    assert score.__qualname__.startswith("_standardised_logistic")
    x, _ = data(rows=rows, seed=rows)
    assert np.array_equal(score(x), model.predict_proba(x)[:, 1])
    # The caller's rows are not changed (the scaler works on a copy, as scikit-learn's).
    before = x.copy()
    score(x)
    assert np.array_equal(x, before)


def test_other_estimators_are_scored_by_predict_proba() -> None:
    x, y = data(rows=300)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    other_scaler = Pipeline([("s", MinMaxScaler()), ("c", LogisticRegression(max_iter=5000))]).fit(
        x, y
    )
    for model in (forest, other_scaler, LogisticRegression(max_iter=5000).fit(x, y)):
        score = positive_proba(model)
        assert score.__qualname__.startswith("_generic")
        assert np.array_equal(score(x[:50]), model.predict_proba(x[:50])[:, 1])


def test_more_than_two_classes_are_scored_by_predict_proba() -> None:
    x, _ = data(rows=300)
    y = np.arange(300) % 3
    model = Pipeline([("s", StandardScaler()), ("c", LogisticRegression(max_iter=5000))]).fit(x, y)
    assert positive_proba(model).__qualname__.startswith("_generic")


def test_a_fast_path_that_disagrees_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = lr()
    build = fastpath._standardised_logistic

    def off_by_one_ulp(estimator: Any) -> Any:
        fast = build(estimator)
        assert fast is not None
        return lambda rows: np.nextafter(fast(rows), 2.0)

    monkeypatch.setattr(fastpath, "_standardised_logistic", off_by_one_ulp)
    with caplog.at_level(logging.WARNING, logger="models.fastpath"):
        score = positive_proba(model)
    assert score.__qualname__.startswith("_generic")
    assert "disagrees" in caplog.text
    x, _ = data(rows=10)
    assert np.array_equal(score(x), model.predict_proba(x)[:, 1])
