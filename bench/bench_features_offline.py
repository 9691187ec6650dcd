"""Time the offline feature engine on the handbook-size dataset.

Run: ``.venv/bin/python bench/bench_features_offline.py [--runs N] [--days D] ...``.
Simulates the dataset with features/simulator.py (5,000 customers, 10,000 terminals,
183 days: about 1.75 M transactions, not timed), then times ``compute_features`` with
every default feature. Prints rows, seconds and rows/s per run, and the load average
before and after (the machine is shared: read the seconds with the load).
Target: under 20 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import polars as pl

from features.offline import compute_features
from features.simulator import SimulationConfig, simulate
from features.spec import DEFAULT_FEATURES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="timed runs (default 3)")
    handbook = SimulationConfig()
    parser.add_argument("--customers", type=int, default=handbook.customers)
    parser.add_argument("--terminals", type=int, default=handbook.terminals)
    parser.add_argument("--days", type=int, default=handbook.days)
    args = parser.parse_args()

    config = SimulationConfig(customers=args.customers, terminals=args.terminals, days=args.days)
    started = time.perf_counter()
    transactions = simulate(config)
    print(
        f"dataset: simulator, {config.customers} customers, {config.terminals} terminals, "
        f"{config.days} days: {transactions.height} transactions, "
        f"{int(transactions['is_fraud'].sum())} frauds "
        f"(simulated in {time.perf_counter() - started:.1f} s, not timed)"
    )
    print(f"features: {len(DEFAULT_FEATURES)} ({', '.join(DEFAULT_FEATURES.names)})")
    print(f"polars {pl.__version__}, threads {pl.thread_pool_size()}, cpus {os.cpu_count()}")

    load_before = os.getloadavg()
    seconds: list[float] = []
    for run in range(1, args.runs + 1):
        started = time.perf_counter()
        out = compute_features(transactions)
        elapsed = time.perf_counter() - started
        seconds.append(elapsed)
        print(
            f"run {run}: {out.height} rows in {elapsed:.2f} s, "
            f"{out.height / elapsed:,.0f} rows/s, load {os.getloadavg()[0]:.2f}"
        )
    best = min(seconds)
    print(
        f"best: {best:.2f} s ({transactions.height / best:,.0f} rows/s), "
        f"median {statistics.median(seconds):.2f} s"
    )
    print(f"load average before: {load_before}, after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
