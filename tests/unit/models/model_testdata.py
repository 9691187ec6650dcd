"""A small simulated dataset with features, shared by the model tests (built once)."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import polars as pl
from threadpoolctl import threadpool_limits

from features.offline import compute_features
from features.simulator import SimulationConfig, simulate
from features.spec import DEFAULT_FEATURES

#: 56 days: the latest split (days 35..55) and two validation folds before it.
SMALL = SimulationConfig(customers=200, terminals=400, days=56, seed=7)


@functools.cache
def small_transactions() -> pl.DataFrame:
    """The simulated transactions of `SMALL`."""
    return simulate(SMALL)


@functools.cache
def small_features() -> pl.DataFrame:
    """`small_transactions` with the default features."""
    return compute_features(small_transactions(), DEFAULT_FEATURES)


def single_threaded() -> Iterator[None]:
    """One native thread during a test, restored afterwards (use as an autouse fixture).

    Scorers pin pools process-wide; and on a shared two-core machine OpenMP's spinning
    threads make small gradient boosting fits several times slower than one thread does.
    """
    limits = threadpool_limits(limits=1)
    yield
    limits.restore_original_limits()
