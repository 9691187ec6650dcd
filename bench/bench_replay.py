"""Time ``fraudstream replay --max`` into the real broker, at the handbook's size.

Run: ``.venv/bin/python bench/bench_replay.py [--path FILE] [--partitions N]``. Without
``--path`` it simulates the handbook's dataset (5,000 customers, 10,000 terminals,
183 days, about 1.78 M transactions) into a temporary Parquet file first. The replay runs
as the real command in a child process, into topics with a unique prefix that are
deleted afterwards. Prints the file size, the rows, the events sent, the wall-clock time
of the whole command and of the sending alone, events/s, the child's peak memory and the
load average before and after (the machine is shared: read the rate with the load).
Target: at least 50,000 events/s at --max.

Measured (2026-11-26, 2-core machine shared with other benchmarks, load average 6.8-7.0
during the run): 1,783,498 transactions + 14,719 fraud reports = 1,798,217 events from
a 16.9 MB Parquet file, 6 partitions per topic; sending 14.2 s = 126,635 events/s; the
whole command (start-up, row check, topics) 20.0 s = 89,845 events/s; peak memory 453 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import polars as pl
from aiokafka.admin import AIOKafkaAdminClient

from features.simulator import SimulationConfig, simulate, write_dataset
from streams.kafka import client_options
from streams.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--path", type=Path, help="replay this file instead of a simulated one")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        path = args.path
        if path is None:
            path = Path(scratch) / "transactions.parquet"
            write_dataset(simulate(SimulationConfig()), path)
        rows = (
            pl.scan_parquet(path).select(pl.len()).collect().item()
            if path.suffix != ".csv"
            else None
        )
        settings = Settings(
            topic_prefix=f"bench-{uuid.uuid4().hex[:8]}-", topic_partitions=args.partitions
        )
        load_before = os.getloadavg()
        started = time.perf_counter()
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "streams",
                "--topic-prefix",
                settings.topic_prefix,
                "--partitions",
                str(args.partitions),
                "--log-level",
                "error",
                "replay",
                str(path),
                "--max",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        load_after = os.getloadavg()
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        size_mb = path.stat().st_size / 1e6
        try:
            if completed.returncode != 0:
                print(completed.stdout, completed.stderr, file=sys.stderr)
                raise SystemExit(f"replay failed with exit status {completed.returncode}")
            summary = completed.stdout.strip().splitlines()
            match = re.search(
                r": (\d+) transactions to .*?, (\d+) fraud reports to .*? in ([\d.]+) s ",
                summary[0],
            )
            assert match, summary
            transactions, reports = int(match[1]), int(match[2])
            sending_s = float(match[3])
            events = transactions + reports
            print(f"file: {path} ({size_mb:.1f} MB, {rows if rows is not None else '?'} rows)")
            print(
                f"events: {events} ({transactions} transactions, {reports} fraud reports), "
                f"{args.partitions} partitions per topic"
            )
            print(
                f"sending: {sending_s:.2f} s, {events / sending_s:,.0f} events/s "
                "(producer start to last acknowledgement)"
            )
            print(
                f"whole command: {wall:.2f} s, {events / wall:,.0f} events/s "
                "(start-up, row check, topic declaration included)"
            )
            print(f"peak memory of the replay process: {peak_mb:.0f} MB")
            print(
                f"load average before: {load_before}, after: {load_after} ({os.cpu_count()} CPUs)"
            )
        finally:
            asyncio.run(_delete_topics(settings))


async def _delete_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


if __name__ == "__main__":
    main()
