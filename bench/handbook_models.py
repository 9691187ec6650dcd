"""What the scoring and reasons benchmarks share: test-week vectors, baseline models, timing.

Both measure a per-call cost on the models a worker would really run: each kind's
baseline trained on the handbook's train week of a simulated dataset (or the newest
versions found in a given registry), and vectors drawn from the test week.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from features.offline import compute_features
from features.simulator import SimulationConfig, simulate
from features.spec import DEFAULT_FEATURES
from models.estimators import BASELINE_PARAMS, ModelKind, feature_matrix, fit, fraud_labels
from models.handbook import HANDBOOK_TRAIN_START
from models.protocol import Split, split
from models.registry import ModelRegistry
from models.training import feature_baseline


def load() -> str:
    """The machine's load average, for every printed number (the machine is shared)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def arguments(description: str) -> argparse.Namespace:
    """--registry (use its models instead of training), --customers, --terminals."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--terminals", type=int, default=10_000)
    return parser.parse_args()


def handbook_split(args: argparse.Namespace) -> Split:
    """The handbook split of a simulated dataset with the default features."""
    config = SimulationConfig(customers=args.customers, terminals=args.terminals)
    frame = compute_features(simulate(config), DEFAULT_FEATURES)
    return split(frame, HANDBOOK_TRAIN_START)


def register_baselines(registry: ModelRegistry, assessed: Split) -> None:
    """Fit each kind's baseline on the train week and register it (with its baseline)."""
    names = DEFAULT_FEATURES.names
    x = feature_matrix(assessed.train, names)
    y = fraud_labels(assessed.train)
    baseline = feature_baseline(x)
    for kind in ModelKind:
        started = time.perf_counter()
        estimator = fit(kind, BASELINE_PARAMS[kind], x, y, seed=0)
        registry.register(
            estimator,
            kind=kind,
            feature_names=names,
            threshold={"value": 0.5, "objective": "fixed"},
            metrics={},
            params=BASELINE_PARAMS[kind],
            training={"period": assessed.describe()},
            feature_baseline=baseline,
        )
        print(f"fitted {kind.value} in {time.perf_counter() - started:.1f}s")


def time_calls(
    call: Callable[..., Any], inputs: Sequence[tuple[Any, ...]], budget_s: float
) -> tuple[int, float, float]:
    """Call ``call(*inputs[i])`` round robin for ``budget_s`` (at least 5 calls).

    Returns:
        Calls made, median and 90th percentile microseconds per call.
    """
    call(*inputs[0])  # warm up
    timings: list[float] = []
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline or len(timings) < 5:
        arguments = inputs[len(timings) % len(inputs)]
        started = time.perf_counter_ns()
        call(*arguments)
        timings.append((time.perf_counter_ns() - started) / 1000)
    return len(timings), statistics.median(timings), statistics.quantiles(timings, n=10)[-1]
