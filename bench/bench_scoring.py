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

import tempfile
from pathlib import Path

import numpy as np
from handbook_models import arguments, handbook_split, load, register_baselines, time_calls

from features.spec import DEFAULT_FEATURES
from models.estimators import feature_matrix
from models.registry import ModelRegistry
from models.scoring import BatchScorer

BATCH_SIZES = (1, 10, 100, 1000)
#: Time spent per (kind, batch size), so small batches get many calls.
BUDGET_S = 2.0


def main() -> None:
    args = arguments((__doc__ or "").splitlines()[0])
    names = DEFAULT_FEATURES.names
    assessed = handbook_split(args)
    vectors = feature_matrix(assessed.test, names)

    with tempfile.TemporaryDirectory() as temporary:
        registry = ModelRegistry(args.registry or Path(temporary))
        if args.registry is None:
            register_baselines(registry, assessed)
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
                    (np.ascontiguousarray(vectors[rng.integers(0, len(vectors), size)]),)
                    for _ in range(64)
                ]
                calls, median, p90 = time_calls(scorer.score_batch, batches, BUDGET_S)
                print(
                    f"{kind.value:<24} {size:>6} {calls:>7} {median:>12.1f} "
                    f"{p90:>10.1f} {median / size:>9.2f}  {load()}",
                    flush=True,
                )
            scorer.close()


if __name__ == "__main__":
    main()
