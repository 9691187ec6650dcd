"""Time ``fraudstream generate`` at the handbook's size (5,000 x 10,000 x 183 days).

Run: ``.venv/bin/python bench/bench_generate.py [--out PATH]``. Prints the seconds spent
simulating and writing Parquet, the rows, the fraud rate, the count per scenario, and the
load average before and after (the machine is shared: read the seconds with the load).
Target: under 30 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from features.dataset import FRAUD_SCENARIO, IS_FRAUD
from features.simulator import SimulationConfig, simulate, write_dataset

HANDBOOK_ROWS = 1_754_155
HANDBOOK_FRAUD_RATE = 0.0084


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="keep the Parquet file here")
    args = parser.parse_args()

    load_before = os.getloadavg()
    config = SimulationConfig()
    started = time.perf_counter()
    frame = simulate(config)
    simulated = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "transactions.parquet"
        write_dataset(frame, out)
        written = time.perf_counter()
        size = out.stat().st_size

    frauds = int(frame[IS_FRAUD].sum())
    counts = dict(frame[FRAUD_SCENARIO].value_counts().iter_rows())
    print(
        f"config: {config.customers} customers, {config.terminals} terminals, "
        f"{config.days} days from {config.start_date}, seed {config.seed}"
    )
    print(
        f"seconds: {written - started:.2f} total "
        f"(simulate {simulated - started:.2f}, write parquet {written - simulated:.2f})"
    )
    print(f"rows: {frame.height} (handbook {HANDBOOK_ROWS}), parquet {size / 1e6:.1f} MB")
    print(
        f"fraud rate: {frauds / frame.height:.3%} (handbook {HANDBOOK_FRAUD_RATE:.2%}), "
        f"{frauds} frauds"
    )
    print("by scenario: " + ", ".join(f"{s}: {counts.get(s, 0)}" for s in (0, 1, 2, 3)))
    print(f"load average before: {load_before}, after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
