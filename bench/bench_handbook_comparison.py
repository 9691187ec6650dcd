"""Our models on the handbook-size simulated dataset, beside the handbook's published results.

Usage:
    .venv/bin/python bench/bench_handbook_comparison.py [--goal a|b|all] [--kinds lr,rf,hgb]
        [--folds 4] [--seed 0] [--customers 5000 --terminals 10000]

Goal (a): the handbook's 15 features, its split (train 2018-07-25..07-31, test
2018-08-08..08-14), its baseline settings, then model selection on 4 prequential
validation folds. This checks simulator, features and metrics together: we should land
within a few hundredths of the published figures.

Goal (b): our feature spec (the 15, plus 9 extras: the amount against the customer's
means, time since the previous transaction, distinct terminals, and the terminal's frauds
reported at least an hour before the transaction) with model selection. These are the
features the workers compute, so a model trained here can be promoted as it is.

Rows "selected, 4-fold test" are the mean over four prequential test folds (latest train
start 2018-08-15), which is how the handbook's chapter 5 reports its selected models.
Load averages are printed with each section: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import polars as pl
from threadpoolctl import threadpool_limits

from features.offline import compute_features
from features.simulator import SimulationConfig, simulate
from features.spec import DEFAULT_FEATURES, HANDBOOK_FEATURES
from models.estimators import (
    BASELINE_PARAMS,
    ModelKind,
    feature_matrix,
    fit,
    fraud_labels,
    fraud_scores,
)
from models.evaluation import assess
from models.handbook import (
    HANDBOOK_TRAIN_START,
    PUBLISHED_BASELINES,
    PUBLISHED_SELECTED,
    ComparisonRow,
    comparison_table,
)
from models.protocol import split
from models.training import TrainingConfig, handbook_comparable, train


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def section(
    frame: pl.DataFrame, names: Sequence[str], kinds: Sequence[ModelKind], folds: int, seed: int
) -> list[ComparisonRow]:
    rows: list[ComparisonRow] = []
    handbook_split = split(frame, HANDBOOK_TRAIN_START)
    x_train = feature_matrix(handbook_split.train, names)
    y_train = fraud_labels(handbook_split.train)
    x_test = feature_matrix(handbook_split.test, names)
    for kind in kinds:
        started = time.perf_counter()
        estimator = fit(kind, BASELINE_PARAMS[kind], x_train, y_train, seed)
        ours = assess(handbook_split.test, fraud_scores(estimator, x_test))
        print(
            f"  {kind.value} baseline: {time.perf_counter() - started:.0f}s, {load()}", flush=True
        )
        rows.append(ComparisonRow(f"{kind.short} baseline", ours, PUBLISHED_BASELINES[kind]))

        started = time.perf_counter()
        config = TrainingConfig(kind, tuple(names), HANDBOOK_TRAIN_START, select=True, folds=folds)
        result = train(frame, config)
        print(
            f"  {kind.value} selected {result.params} (validation AP "
            f"{result.validation.average_precision:.3f}): "
            f"{time.perf_counter() - started:.0f}s, {load()}",
            flush=True,
        )
        for candidate in result.selection.candidates:
            v = candidate.validation
            print(
                f"    candidate {candidate.params}: validation AUC {v.auc_roc:.3f} "
                f"AP {v.average_precision:.3f} CP {v.card_precision:.3f}",
                flush=True,
            )
        print(
            f"    threshold {result.threshold.value:.4g} ({result.threshold.objective.value} "
            f"{result.threshold.target:g}): test {result.test_alerts}",
            flush=True,
        )
        published = PUBLISHED_SELECTED.get(kind)
        rows.append(ComparisonRow(f"{kind.short} selected", result.test, published))
        started = time.perf_counter()
        prequential = handbook_comparable(
            frame, kind, result.params, names, HANDBOOK_TRAIN_START, 4
        )
        print(f"    4-fold test: {time.perf_counter() - started:.0f}s, {load()}", flush=True)
        rows.append(ComparisonRow(f"{kind.short} selected, 4-fold test", prequential, published))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--goal", choices=["a", "b", "all"], default="all")
    parser.add_argument("--kinds", default="lr,rf,hgb")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--customers", type=int, default=5_000, help="smaller: a quick check")
    parser.add_argument("--terminals", type=int, default=10_000)
    args = parser.parse_args()
    kinds = [ModelKind.parse(k) for k in args.kinds.split(",")]

    # One thread for every native pool: a shared 2-core machine, and comparable timings.
    threadpool_limits(limits=1)
    started = time.perf_counter()
    transactions = simulate(
        SimulationConfig(customers=args.customers, terminals=args.terminals, seed=args.seed)
    )
    frame = compute_features(transactions, DEFAULT_FEATURES)
    fraud_rate = int(frame["is_fraud"].sum()) / max(frame.height, 1)
    print(
        f"dataset: {frame.height:,} transactions, {fraud_rate:.2%} fraud, "
        f"features in {time.perf_counter() - started:.1f}s; {load()}",
        flush=True,
    )
    handbook_split = split(frame, HANDBOOK_TRAIN_START)
    print(
        f"handbook split: {handbook_split.describe()}; train {handbook_split.train.height:,} "
        f"({int(handbook_split.train['is_fraud'].sum())} frauds), test "
        f"{handbook_split.test.height:,} ({int(handbook_split.test['is_fraud'].sum())} frauds, "
        f"{handbook_split.removed_test_rows:,} rows of known compromised cards removed)",
        flush=True,
    )
    goals: list[tuple[str, Sequence[str], Sequence[ModelKind]]] = []
    if args.goal in ("a", "all"):
        goals.append(("(a) handbook's 15 features", HANDBOOK_FEATURES.names, kinds))
    if args.goal in ("b", "all"):
        goals.append(
            (f"(b) our spec's {len(DEFAULT_FEATURES)} features", DEFAULT_FEATURES.names, kinds)
        )
    for title, names, goal_kinds in goals:
        print(f"\n{title}: {load()}", flush=True)
        rows = section(frame, names, goal_kinds, args.folds, args.seed)
        print(comparison_table(rows, f"{title}, test {handbook_split.describe()}"), flush=True)
    print(f"\ndone in {time.perf_counter() - started:.0f}s; {load()}")


if __name__ == "__main__":
    main()
