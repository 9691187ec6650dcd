"""Alert-reason cost per alert, by alerts per batch and model kind, through the explainer.

Usage:
    .venv/bin/python bench/bench_reasons.py [--registry DIR] [--customers 5000 --terminals 10000]

Without --registry, each kind's baseline is trained on the handbook's train week of a
simulated dataset (handbook size by default; the random forest takes a minute or two to
fit) and registered, with its feature baseline (training medians), in a temporary
registry. With --registry, the newest version of each kind found there is used instead;
versions registered without a feature baseline cannot be explained and are skipped.
Models are loaded and verified by the registry, scored by `models.scoring.BatchScorer`
(n_jobs=1, native pools pinned to one thread: the worker's setting) and explained by
`models.explain.ReasonExplainer.for_model`, as the score agent does.

Alerts are drawn from the highest-scoring test-week transactions (the top 1 %, at least
200): explanation cost does not depend on the threshold, but tree paths do depend on the
rows, and alerts are unusual rows. Only ``explain`` is timed; the scores it gets were
computed beforehand, as the batch scorer computes them in the worker.

Printed per kind and alerts per batch (k): median and 90th percentile microseconds per
``explain`` call, microseconds per alert (median call / k), and the mean number of reasons
per alert; with the load average, since the machine is shared.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from handbook_models import arguments, handbook_split, load, register_baselines, time_calls

from features.spec import DEFAULT_FEATURES
from models.estimators import feature_matrix
from models.explain import ReasonExplainer
from models.registry import ModelRegistry
from models.scoring import BatchScorer

ALERTS_PER_BATCH = (1, 10, 100)
#: Time spent per (kind, k), so small k gets many calls.
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
        newest = {m.kind: m for m in registry.versions() if m.feature_names == names}
        for metadata in newest.values():
            if metadata.feature_baseline is None:
                print(f"skipping {metadata.version}: no feature baseline in its metadata")
        newest = {k: m for k, m in newest.items() if m.feature_baseline is not None}

        print(
            f"\nalert reasons (occlusion, top 3), {len(names)} features, "
            f"{len(vectors):,} test-week vectors; load average at start: {load()}"
        )
        print(
            f"{'model':<24} {'k':>5} {'calls':>7} {'us/call p50':>12} {'p90':>10} "
            f"{'us/alert':>9} {'reasons':>8}  load"
        )
        rng = np.random.default_rng(0)
        for kind, metadata in sorted(newest.items()):
            loaded = registry.load(metadata.version, names)
            scorer = BatchScorer(loaded, names)
            explainer = ReasonExplainer.for_model(loaded)
            all_scores = scorer.score_batch(vectors)
            pool_size = max(200, len(vectors) // 100)
            pool = np.argsort(-all_scores, kind="stable")[:pool_size]
            for k in ALERTS_PER_BATCH:
                picks = [rng.choice(pool, k) for _ in range(64)]
                batches = [(np.ascontiguousarray(vectors[p]), all_scores[p]) for p in picks]
                reasons = sum(len(r) for r in explainer.explain(*batches[0])) / k
                calls, median, p90 = time_calls(explainer.explain, batches, BUDGET_S)
                print(
                    f"{kind.value:<24} {k:>5} {calls:>7} {median:>12.1f} "
                    f"{p90:>10.1f} {median / k:>9.1f} {reasons:>8.2f}  {load()}",
                    flush=True,
                )
            scorer.close()


if __name__ == "__main__":
    main()
