"""Redis memory per customer and per terminal, for sizing a deployment.

Runs a simulated dataset through the online engine (the same states the workers keep),
then writes every customer's and terminal's final state into Redis under the table
store's key layout (`streams.tablestore.keys`, a prefix of this run's own) with the
store's TTL, and measures what Redis takes: ``used_memory`` before and after each table,
and ``MEMORY USAGE`` of a sample of keys. The keys are deleted afterwards.

Usage:
    .venv/bin/python bench/bench_state_memory.py [--customers 5000 --terminals 10000]
        [--days 183] [--partitions 6] [--redis-url redis://127.0.0.1:6379/0]

A customer's state holds 31 days of its transactions (plus a day of lateness), a
terminal's 44 days and its reported frauds, so both grow with the transaction rate: the
figures printed are for the handbook's population (about 2 transactions per customer per
day, 1 per terminal); scale the per-key bytes by your rates (about 16 bytes per customer
transaction kept, 4 per terminal transaction, 20 per reported fraud).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
import zlib

import redis

from features.online import OnlineEngine, stream_events
from features.simulator import SimulationConfig, simulate
from features.spec import Entity
from streams.pipeline import CUSTOMER_TABLE, TERMINAL_TABLE
from streams.tablestore.config import DEFAULT_TTL_S
from streams.tablestore.keys import entry_key, partition_prefix

#: How many keys MEMORY USAGE samples per table (it costs a round trip each).
SAMPLE = 2_000
BATCH = 5_000


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    started = time.perf_counter()
    transactions = simulate(
        SimulationConfig(customers=args.customers, terminals=args.terminals, days=args.days)
    )
    engine = OnlineEngine()
    last = 0
    for event in stream_events(transactions):
        last = event.time_ms
        if event.is_transaction:
            engine.transaction(event.time_ms, event.customer_id, event.terminal_id, event.amount)
        else:
            engine.fraud_report(
                event.tx_id, event.tx_time_ms, event.customer_id, event.terminal_id, event.time_ms
            )
    expired = engine.expire(last)
    print(
        f"{transactions.height:,} transactions over {args.days} days through the online "
        f"engine in {time.perf_counter() - started:.0f}s; {expired} quiet states expired; "
        f"{load()}"
    )

    client = redis.Redis.from_url(args.redis_url)
    run = uuid.uuid4().hex[:8]
    ttl_ms = DEFAULT_TTL_S * 1000
    try:
        for entity, table in (
            (Entity.CUSTOMER, "customer_windows"),
            (Entity.TERMINAL, "terminal_windows"),
        ):
            states = engine.states[entity]
            prefixes = [
                partition_prefix("bench", f"memory-{run}", table, p) for p in range(args.partitions)
            ]
            keys: list[bytes] = []
            sizes: list[int] = []
            before = used_memory(client)
            pipe = client.pipeline(transaction=False)
            for n, (entity_id, state) in enumerate(states.items(), 1):
                raw_key = entity_id.encode()
                key = entry_key(prefixes[zlib.crc32(raw_key) % args.partitions], raw_key)
                value = state.to_bytes()
                pipe.set(key, value, px=ttl_ms)
                keys.append(key)
                sizes.append(len(value))
                if n % BATCH == 0:
                    pipe.execute()
            pipe.execute()
            after = used_memory(client)
            sample = keys[:: max(1, len(keys) // SAMPLE)]
            usage = [int(client.memory_usage(k) or 0) for k in sample]
            print(
                f"{entity.value}s: {len(states):,} states; value bytes median "
                f"{statistics.median(sizes):,.0f}, p99 {percentile(sizes, 0.99):,}, max "
                f"{max(sizes):,}; Redis MEMORY USAGE per key median "
                f"{statistics.median(usage):,.0f}, p99 {percentile(usage, 0.99):,}; "
                f"used_memory grew {after - before:,} bytes = "
                f"{(after - before) / max(1, len(states)):,.0f} per {entity.value}"
            )
    finally:
        for prefix_table in (CUSTOMER_TABLE, TERMINAL_TABLE):
            for p in range(args.partitions):
                prefix = partition_prefix("bench", f"memory-{run}", prefix_table, p)
                batch = list(client.scan_iter(match=prefix + b"k:*", count=5_000))
                for i in range(0, len(batch), BATCH):
                    client.delete(*batch[i : i + BATCH])
        client.close()


if __name__ == "__main__":
    main()
