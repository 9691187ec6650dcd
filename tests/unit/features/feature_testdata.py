"""A small, seeded transaction generator for the feature engines' tests and benchmarks.

Not the simulator (features/simulator.py is): this one is built to hit the engines' edge
cases often, not to look like fraud. Customers buy at a few usual terminals with Poisson
daily counts; on top of that it plants equal timestamps, bursts, transactions exactly on
(and 1 ms around) every window edge of both entities, customers that go quiet for longer
than any window, compromised terminals, and fraud reports at 0, up to, exactly at and
beyond the 7-day delay, and at 7 days minus an hour and 1 ms after it (the last report a
read exactly at the delay counts, and the first it does not).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from features import dataset

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
START = datetime(2024, 4, 1, tzinfo=UTC)

#: Offsets of planted "echo" transactions: every customer and terminal window edge.
_EDGE_DAYS = np.array([1, 7, 8, 14, 30, 37], dtype=np.int64)


def generate_transactions(
    *,
    customers: int = 300,
    terminals: int = 200,
    days: int = 90,
    mean_daily_rate: float = 1.2,
    seed: int = 0,
    start: datetime = START,
) -> pl.DataFrame:
    """A dataset with the columns of features.dataset (about customers*days*rate rows)."""
    rng = np.random.default_rng(seed)
    start_ms = int(start.timestamp() * 1000)

    rate = rng.uniform(0.0, 2.0 * mean_daily_rate, customers)
    counts = rng.poisson(np.repeat(rate[:, None], days, axis=1))
    # A tenth of the customers go quiet for 35 to 60 days: longer than any window.
    quiet = rng.random(customers) < 0.1
    quiet_from = rng.integers(0, max(days - 35, 1), customers)
    quiet_len = rng.integers(35, 61, customers)
    day_index = np.arange(days)
    silenced = (
        quiet[:, None]
        & (day_index[None, :] >= quiet_from[:, None])
        & (day_index[None, :] < (quiet_from + quiet_len)[:, None])
    )
    counts[silenced] = 0

    customer = np.repeat(np.repeat(np.arange(customers), days), counts.ravel())
    day = np.repeat(np.tile(day_index, customers), counts.ravel())
    time = start_ms + day * DAY_MS + rng.integers(0, DAY_MS, len(day))

    usual_count = rng.integers(2, 13, customers)
    usual = rng.integers(0, terminals, (customers, 12))
    terminal = usual[customer, (rng.random(len(customer)) * usual_count[customer]).astype(np.int64)]

    customer, terminal, time = _plant_edges(rng, customer, terminal, time)

    n = len(time)
    amount_mean = rng.uniform(5.0, 150.0, customers)
    amount = np.round(np.abs(rng.normal(amount_mean[customer], amount_mean[customer] / 2)), 2)

    scenario = np.zeros(n, dtype=np.int8)
    scenario[rng.random(n) < 0.01] = 3
    scenario[amount > 220] = 1
    compromised = rng.random(terminals) < 0.03
    compromised_from = start_ms + rng.integers(0, days, terminals) * DAY_MS
    hit = compromised[terminal] & (time >= compromised_from[terminal])
    hit &= time < compromised_from[terminal] + 14 * DAY_MS
    scenario[hit] = 2
    is_fraud = scenario > 0

    delay = rng.integers(0, 7 * DAY_MS + 1, n)
    pick = rng.random(n)
    delay[pick < 0.10] = 7 * DAY_MS  # exactly at the delay
    delay[(pick >= 0.10) & (pick < 0.15)] = 0  # reported at once
    late = (pick >= 0.15) & (pick < 0.18)  # later than the delay: counts from arrival
    delay[late] = 7 * DAY_MS + rng.integers(1, 13 * DAY_MS, int(late.sum()))
    # An hour before the delay and 1 ms after: the last report a read exactly at the delay
    # counts (terminal features read reports an hour old), and the first it does not.
    delay[(pick >= 0.18) & (pick < 0.20)] = 7 * DAY_MS - HOUR_MS
    delay[(pick >= 0.20) & (pick < 0.22)] = 7 * DAY_MS - HOUR_MS + 1
    reported = np.where(is_fraud, time + delay, 0)

    tx_number = rng.permutation(n)  # ids unrelated to time, so ties are not in id order
    frame = pl.DataFrame(
        {
            dataset.TX_ID: [f"TX{k:08d}" for k in tx_number],
            dataset.TX_TIME: time,
            dataset.CUSTOMER_ID: [f"C{k:05d}" for k in customer],
            dataset.TERMINAL_ID: [f"T{k:05d}" for k in terminal],
            dataset.AMOUNT: amount,
            dataset.CURRENCY: dataset.DEFAULT_CURRENCY,
            dataset.IS_FRAUD: is_fraud,
            dataset.FRAUD_SCENARIO: scenario,
            dataset.REPORTED_AT: reported,
        }
    )
    return frame.with_columns(
        pl.col(dataset.TX_TIME).cast(dataset.TIMESTAMP),
        pl.when(pl.col(dataset.IS_FRAUD))
        .then(pl.col(dataset.REPORTED_AT))
        .otherwise(None)
        .cast(dataset.TIMESTAMP),
    ).sort(dataset.TX_TIME, dataset.TX_ID)


def _plant_edges(
    rng: np.random.Generator,
    customer: np.ndarray,
    terminal: np.ndarray,
    time: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add ties, bursts and transactions exactly on and 1 ms around window edges."""
    n = len(time)
    # Equal timestamps: 2 % of transactions get a twin of the same customer and time, at
    # another of its terminals or the same one.
    twins = rng.random(n) < 0.02
    # Bursts: 0.5 % start 2 to 12 transactions within one minute, some at the same ms.
    bursts = np.flatnonzero(rng.random(n) < 0.005)
    burst_size = rng.integers(2, 13, len(bursts))
    burst_src = np.repeat(bursts, burst_size)
    burst_offset = rng.integers(0, 60_000, len(burst_src)) * (rng.random(len(burst_src)) < 0.7)
    # Echoes: 3 % get a copy at the same customer and terminal exactly 1, 7, 8, 14, 30 or
    # 37 days later, -1, 0 or +1 ms.
    echoes = np.flatnonzero(rng.random(n) < 0.03)
    echo_offset = rng.choice(_EDGE_DAYS, len(echoes)) * DAY_MS + rng.integers(-1, 2, len(echoes))
    source = np.concatenate([np.arange(n), np.flatnonzero(twins), burst_src, echoes])
    offset = np.concatenate(
        [np.zeros(n + int(twins.sum()), dtype=np.int64), burst_offset, echo_offset]
    )
    keep = (time[source] + offset) <= time.max()
    source, offset = source[keep], offset[keep]
    return customer[source], terminal[source], time[source] + offset
