"""Scoring cost per transaction, by batch size and model kind, through the batch scorer.

Usage:
    .venv/bin/python bench/bench_scoring.py [--registry DIR] [--customers 5000 --terminals 10000]

Without --registry, each kind's baseline is trained on the handbook's train week of a
simulated dataset (handbook size by default: the models a worker would really run; the
random forest takes a minute or two to fit) and registered in a temporary registry. With
--registry, the newest version of each kind found there is used instead. Models are
loaded and verified by the registry and scored by `models.scoring.BatchScorer`, exactly
the worker's path: n_jobs=1, native thread pools pinned to one thread, one predict_proba
per batch. Batches are drawn from the test week's feature vectors.

Printed per kind and batch size: median and 90th percentile microseconds per call, and
microseconds per transaction (median call / batch size); with the load average, since
the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from features.offline import compute_features
from features.simulator import SimulationConfig, simulate
from features.spec import DEFAULT_FEATURES
from models.estimators import BASELINE_PARAMS, ModelKind, feature_matrix, fit, fraud_labels
from models.handbook import HANDBOOK_TRAIN_START
from models.protocol import split
from models.registry import ModelRegistry
from models.scoring import BatchScorer

BATCH_SIZES = (1, 10, 100, 1000)
#: Time spent per (kind, batch size), so small batches get many calls.
BUDGET_S = 2.0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--terminals", type=int, default=10_000)
    args = parser.parse_args()

    names = DEFAULT_FEATURES.names
    config = SimulationConfig(customers=args.customers, terminals=args.terminals)
    frame = compute_features(simulate(config), DEFAULT_FEATURES)
    handbook_split = split(frame, HANDBOOK_TRAIN_START)
    vectors = feature_matrix(handbook_split.test, names)

    with tempfile.TemporaryDirectory() as temporary:
        registry = ModelRegistry(args.registry or Path(temporary))
        if args.registry is None:
            x = feature_matrix(handbook_split.train, names)
            y = fraud_labels(handbook_split.train)
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
                    training={"period": handbook_split.describe()},
                )
                print(f"fitted {kind.value} in {time.perf_counter() - started:.1f}s")
        newest = {m.kind: m.version for m in registry.versions() if m.feature_names == names}

        print(f"\nbatch scorer, {len(names)} features; load average at start: {load()}")
        print(
            f"{'model':<24} {'batch':>6} {'calls':>7} {'us/call p50':>12} {'p90':>10} "
            f"{'us/tx':>9}  load"
        )
        rng = np.random.default_rng(0)
        for kind, version in sorted(newest.items()):
            scorer = BatchScorer(registry.load(version, names), names)
            for size in BATCH_SIZES:
                batches = [
                    np.ascontiguousarray(vectors[rng.integers(0, len(vectors), size)])
                    for _ in range(64)
                ]
                scorer.score_batch(batches[0])  # warm up
                timings: list[float] = []
                deadline = time.perf_counter() + BUDGET_S
                while time.perf_counter() < deadline or len(timings) < 5:
                    batch = batches[len(timings) % len(batches)]
                    started = time.perf_counter_ns()
                    scorer.score_batch(batch)
                    timings.append((time.perf_counter_ns() - started) / 1000)
                median = statistics.median(timings)
                p90 = statistics.quantiles(timings, n=10)[-1]
                print(
                    f"{kind.value:<24} {size:>6} {len(timings):>7} {median:>12.1f} "
                    f"{p90:>10.1f} {median / size:>9.2f}  {load()}",
                    flush=True,
                )
            scorer.close()


if __name__ == "__main__":
    main()
