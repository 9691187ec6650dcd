"""Time the online feature engine per transaction, and measure its state per entity.

Run: ``.venv/bin/python bench/bench_features_online.py [--customers N] [--days D] ...``.
Simulates a dataset with features/simulator.py (handbook size by default: 5,000
customers, 10,000 terminals, 183 days) and replays it, transactions and fraud reports
interleaved in event-time order, through the online engine, the way the agents split it:

- scorer: transaction features + customer update and read + terminal read (the critical
  path, per transaction; target at most 20 us);
- terminal agent: terminal record per transaction, and fraud reports;
- the same in one call (``OnlineEngine.transaction``), timed as a whole loop with no
  per-call timers, as a cross-check;
- a table's round trip: ``EntityState.to_bytes`` and ``from_bytes`` per state.

Per-call times use ``perf_counter_ns`` around each group of calls, minus the timer's own
cost (calibrated and printed). Steady state is every transaction after the first 37 days
(the longest look-back), when states are full. Prints state sizes in bytes (median, p99,
max over entities at the end, and the bound), and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Final

from features.online import EntityState, OnlineEngine, OnlineFeatures, stream_events
from features.simulator import SimulationConfig, simulate
from features.spec import Entity

DAY_MS: Final = 86_400_000
WARM_UP_DAYS: Final = 37


def timer_overhead_ns() -> float:
    """Cost of one ``perf_counter_ns()`` pair with nothing between."""
    clock = time.perf_counter_ns
    best = float("inf")
    for _ in range(5):
        total = 0
        for _ in range(100_000):
            a = clock()
            total += clock() - a
        best = min(best, total / 100_000)
    return best


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    handbook = SimulationConfig()
    parser.add_argument("--customers", type=int, default=handbook.customers)
    parser.add_argument("--terminals", type=int, default=handbook.terminals)
    parser.add_argument("--days", type=int, default=handbook.days)
    args = parser.parse_args()

    config = SimulationConfig(customers=args.customers, terminals=args.terminals, days=args.days)
    transactions = simulate(config)
    events = list(stream_events(transactions))
    steady_from = config.start_ms + WARM_UP_DAYS * DAY_MS
    print(
        f"stream: simulator, {config.customers} customers, {config.terminals} terminals, "
        f"{config.days} days: {transactions.height} transactions, "
        f"{len(events) - transactions.height} fraud reports (not timed: simulate, order)"
    )
    load_before = os.getloadavg()
    overhead = timer_overhead_ns()
    print(f"timer overhead: {overhead:.0f} ns per perf_counter_ns pair (subtracted)")

    # --- split like the agents, per-call timers ---------------------------------------
    online = OnlineFeatures()
    customer = online.entities[Entity.CUSTOMER]
    terminal = online.entities[Entity.TERMINAL]
    customers: dict[str, EntityState] = {}
    terminals: dict[str, EntityState] = {}
    clock = time.perf_counter_ns
    scorer_ns = record_ns = report_ns = 0
    steady_scorer_ns = steady_txs = txs = reports = 0
    for e in events:
        if not e.is_transaction:
            state = terminals.get(e.terminal_id)
            if state is None:
                state = terminals[e.terminal_id] = EntityState()
            a = clock()
            terminal.record_fraud(state, e.tx_time_ms, e.tx_id, e.time_ms)
            report_ns += clock() - a
            reports += 1
            continue
        c_state = customers.get(e.customer_id)
        if c_state is None:
            c_state = customers[e.customer_id] = EntityState()
        t_state = terminals.get(e.terminal_id)
        if t_state is None:
            t_state = terminals[e.terminal_id] = EntityState()
        a = clock()
        vector = online.new_vector()
        online.transaction_into(e.time_ms, e.amount, vector)
        customer.update_into(c_state, e.time_ms, e.amount, e.terminal_id, vector, e.tx_id)
        terminal.read_into(t_state, e.time_ms, e.amount, vector)
        b = clock()
        terminal.record(t_state, e.time_ms, e.amount, e.customer_id)
        c = clock()
        scorer_ns += b - a
        record_ns += c - b
        txs += 1
        if e.time_ms >= steady_from:
            steady_scorer_ns += b - a
            steady_txs += 1

    def per(total_ns: float, n: int, timers: int = 1) -> float:
        return (total_ns / max(n, 1) - timers * overhead) / 1000

    print(
        f"scorer (tx features + customer update/read + terminal read): "
        f"{per(scorer_ns, txs):.2f} us/tx over {txs} tx, "
        f"steady state {per(steady_scorer_ns, steady_txs):.2f} us/tx over {steady_txs} tx"
    )
    print(f"terminal agent record: {per(record_ns, txs):.2f} us/tx")
    print(f"fraud report: {per(report_ns, reports):.2f} us/report over {reports} reports")

    # --- the same, one call per transaction, no per-call timers --------------------------
    engine = OnlineEngine()
    transaction, report = engine.transaction, engine.fraud_report
    started = time.perf_counter()
    for e in events:
        if e.is_transaction:
            transaction(e.time_ms, e.customer_id, e.terminal_id, e.amount, e.tx_id)
        else:
            report(e.tx_id, e.tx_time_ms, e.customer_id, e.terminal_id, e.time_ms)
    elapsed = time.perf_counter() - started
    print(
        f"OnlineEngine loop (everything above, reports included): "
        f"{elapsed / txs * 1e6:.2f} us/tx, {txs / elapsed:,.0f} tx/s"
    )
    assert engine.states[Entity.CUSTOMER] == customers  # both runs built the same states

    # --- state sizes and a table's round trip --------------------------------------------
    for name, states, windows in (
        ("customer", customers, customer),
        ("terminal", terminals, terminal),
    ):
        encoded = [s.to_bytes() for s in states.values()]
        sizes = [len(data) for data in encoded]
        events_per_state = [len(s) for s in states.values()]
        started = time.perf_counter()
        for s in states.values():
            s.to_bytes()
        encode_us = (time.perf_counter() - started) / len(states) * 1e6
        started = time.perf_counter()
        for data in encoded:
            EntityState.from_bytes(data)
        decode_us = (time.perf_counter() - started) / len(states) * 1e6
        print(
            f"{name} state: {len(states)} entities, bytes median {statistics.median(sizes):.0f}, "
            f"p99 {percentile(sizes, 0.99)}, max {max(sizes)} "
            f"(transactions held: median {statistics.median(events_per_state):.0f}, "
            f"max {max(events_per_state)}); bound {windows.max_state_bytes} bytes "
            f"({windows.max_events} transactions); "
            f"overflow {sum(s.overflow for s in states.values())}"
        )
        print(
            f"{name} state round trip: to_bytes {encode_us:.2f} us, from_bytes {decode_us:.2f} us"
        )
    print(f"load average before: {load_before}, after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
