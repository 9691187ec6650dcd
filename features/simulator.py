"""A seeded card-transaction simulator, written from the fraud-detection handbook's description.

Le Borgne et al., "Reproducible Machine Learning for Credit Card Fraud Detection —
Practical Handbook", chapter 3 "Simulated dataset", describes a generator; this module
implements that description (not the handbook's code) with vectorised numpy, and writes
the columns of ``features.dataset``.

Profiles:
    Customers and terminals are placed uniformly on a 100 x 100 grid. A customer has a
    mean amount ~ U(5, 100), an amount standard deviation of half that mean, a mean
    number of transactions per day ~ U(0, 4), and uses the terminals strictly within
    ``radius`` (5) of its location. A customer with no terminal in reach makes no
    transactions.

Transactions:
    Per customer and day, a count ~ Poisson(mean per day). Each transaction's time of day
    ~ N(noon = 43,200 s, 20,000 s), drawn to the millisecond (our time unit; the handbook
    draws whole seconds). Times outside the day [0, 86,400 s) are dropped, as the handbook
    does, rather than redrawn: that is about 3 % of the draws, and keeps the count
    distribution the handbook's. Amount ~ N(mean, std), replaced by U(0, 2 * mean) when
    negative, rounded to cents. The terminal is drawn uniformly among those in reach.

Frauds, applied in the handbook's order, a later scenario overwriting an earlier one's
label (so precedence is 3 > 2 > 1):
    1. Every transaction with amount > 220 (the amount drawn, before scenario 3).
    2. Each day, 2 terminals drawn at random are compromised for 28 days, that day
       included: all their transactions in that period are fraud.
    3. Each day, 3 customers drawn at random are compromised for 14 days, that day
       included; among the transactions of these three customers in their window, a
       third (rounded down, drawn at random, as the handbook pools them per day) are
       fraud and get their amount multiplied by 5. A transaction drawn by two
       overlapping compromises is multiplied once (the handbook's code would do it
       twice: an artefact, not a scenario).

Compromises are drawn on every day of the period (the handbook's loops stop one day
earlier, which only spares the last day).

Reports:
    A fraud's ``reported_at`` is ``tx_time`` + U{1 minute .. 7 days} milliseconds
    (uniform, inclusive), so every fraud is reported within the 7-day delay of the
    terminal risk features, and counts in them from an hour after its report. Genuine
    transactions have no report (null).

Ids and order:
    Customers are ``C`` + a zero-padded index (``C0042``) and terminals ``T`` + one
    (``T0042``), padded to the width of the largest index so ids are short and sort like
    their numbers. After sorting by time (ties broken by customer, then by draw order),
    ``tx_id`` is the zero-padded rank (``0000000`` .. ``1754154``), so the output is
    sorted by (tx_time, tx_id) both as numbers and as strings, and tx_id is unique.

Determinism:
    Every random draw comes from ``numpy.random.default_rng`` streams spawned from one
    ``SeedSequence(seed)``, one stream per stage (profiles, transactions, frauds,
    reports), in a fixed order and with sizes that depend only on the configuration.
    The same configuration therefore gives the same rows, and the same file bytes
    (``write_dataset`` is deterministic too). No Python loop runs per transaction: the
    loops are per day (compromises) and per batch of customers (distances).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from features.dataset import (
    AMOUNT,
    CURRENCY,
    CUSTOMER_ID,
    DEFAULT_CURRENCY,
    FRAUD_SCENARIO,
    IS_FRAUD,
    REPORTED_AT,
    TERMINAL_ID,
    TRANSACTION_COLUMNS,
    TX_ID,
    TX_TIME,
)

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: Side of the square grid customers and terminals live on.
GRID_SIZE: Final = 100.0
DAY_MS: Final = 86_400_000
MINUTE_MS: Final = 60_000
#: Time of day ~ N(noon, 20,000 s), in milliseconds.
TIME_OF_DAY_MEAN_MS: Final = 43_200_000.0
TIME_OF_DAY_STD_MS: Final = 20_000_000.0
#: Scenario 1: amounts above this are fraud.
FRAUD_AMOUNT_THRESHOLD: Final = 220.0
#: Scenario 3: compromised transactions' amounts are multiplied by this.
FRAUD_AMOUNT_FACTOR: Final = 5.0
#: A fraud is reported at most this long after the transaction.
MAX_REPORT_DELAY_MS: Final = 7 * DAY_MS

#: Genuine, and the three scenarios, as stored in ``fraud_scenario``.
GENUINE: Final = 0
SCENARIO_AMOUNT: Final = 1
SCENARIO_TERMINAL: Final = 2
SCENARIO_CUSTOMER: Final = 3

#: File suffixes ``write_dataset`` understands.
SUPPORTED_SUFFIXES: Final = (".parquet", ".csv")

#: The contract accepts event times in [1980, 2100): the simulated period must fit.
_EARLIEST_START: Final = date(1980, 1, 1)
_LATEST_END: Final = date(2099, 12, 31)

#: Customer x terminal distances computed at once, bounding memory to ~32 MB per batch.
_DISTANCE_BATCH_CELLS: Final = 4_000_000


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """Sizes and parameters of a simulated dataset; the defaults are the handbook's.

    Attributes:
        customers: Number of customers.
        terminals: Number of terminals.
        days: Number of simulated days.
        start_date: The first day (UTC midnight).
        radius: A customer uses the terminals strictly closer than this.
        seed: Seed of every random draw.
        compromised_terminals_per_day: Scenario 2 draws per day.
        terminal_compromise_days: Scenario 2 duration, the draw day included.
        compromised_customers_per_day: Scenario 3 draws per day.
        customer_compromise_days: Scenario 3 duration, the draw day included.
        currency: ISO 4217 currency of every amount.
    """

    customers: int = 5_000
    terminals: int = 10_000
    days: int = 183
    start_date: date = date(2018, 4, 1)
    radius: float = 5.0
    seed: int = 0
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    compromised_customers_per_day: int = 3
    customer_compromise_days: int = 14
    currency: str = DEFAULT_CURRENCY

    def __post_init__(self) -> None:
        """Refuse configurations that cannot make a dataset, with a one-line reason."""
        for name in ("customers", "terminals", "days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in (
            "compromised_terminals_per_day",
            "terminal_compromise_days",
            "compromised_customers_per_day",
            "customer_compromise_days",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not (isinstance(self.radius, int | float) and 0 < self.radius < float("inf")):
            raise ValueError(f"radius must be a positive number, got {self.radius!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (isinstance(self.currency, str) and re.fullmatch(r"[A-Z]{3}", self.currency)):
            raise ValueError(f"currency must be an ISO 4217 code, got {self.currency!r}")
        if self.start_date < _EARLIEST_START:
            raise ValueError(f"start_date must be on or after {_EARLIEST_START}")
        last_report = (self.start_ms + (self.days + 8) * DAY_MS) // 1000
        if datetime.fromtimestamp(last_report, UTC).date() > _LATEST_END:
            raise ValueError(
                f"the simulated period and its reports must end by {_LATEST_END}: "
                "choose an earlier start_date or fewer days"
            )

    @property
    def start_ms(self) -> int:
        """The first day's UTC midnight, epoch milliseconds."""
        start = datetime(self.start_date.year, self.start_date.month, self.start_date.day)
        return int(start.replace(tzinfo=UTC).timestamp()) * 1000


@dataclass(frozen=True, slots=True)
class _Profiles:
    """Customer profiles and the terminals each can use (CSR: ``reach_start`` offsets)."""

    mean_amount: FloatArray
    std_amount: FloatArray
    mean_per_day: FloatArray
    reach_start: IntArray  # customers + 1 offsets into reach_terminals
    reach_terminals: IntArray


@dataclass(frozen=True, slots=True)
class _Draws:
    """Transactions before labels, customer-major and by day within a customer."""

    customer: IntArray
    day: IntArray
    time_of_day_ms: IntArray
    terminal: IntArray
    amount: FloatArray


def simulate(config: SimulationConfig) -> pl.DataFrame:
    """Generate the transactions of ``config``, labelled, in ``features.dataset`` columns.

    Args:
        config: Sizes, parameters and seed.

    Returns:
        One row per transaction, columns and types of ``TRANSACTION_COLUMNS`` in order,
        sorted by (tx_time, tx_id).
    """
    profile_rng, tx_rng, fraud_rng, report_rng = (
        np.random.default_rng(stream) for stream in np.random.SeedSequence(config.seed).spawn(4)
    )
    profiles = _profiles(config, profile_rng)
    draws = _transactions(config, profiles, tx_rng)
    scenario, amount = _frauds(config, draws, fraud_rng)
    report_delay = report_rng.integers(
        MINUTE_MS, MAX_REPORT_DELAY_MS, size=len(amount), endpoint=True
    )
    tx_time = config.start_ms + draws.day * DAY_MS + draws.time_of_day_ms
    # Stable sort by time: ties keep customer-major draw order.
    order = np.argsort(tx_time, kind="stable")
    is_fraud = scenario[order] > GENUINE
    reported_at = np.where(is_fraud, tx_time[order] + report_delay[order], 0)

    id_width = len(str(max(len(order) - 1, 0)))
    frame = pl.DataFrame(
        {
            TX_ID: np.arange(len(order), dtype=np.int64),
            TX_TIME: tx_time[order],
            CUSTOMER_ID: draws.customer[order],
            TERMINAL_ID: draws.terminal[order],
            AMOUNT: amount[order],
            IS_FRAUD: is_fraud,
            FRAUD_SCENARIO: scenario[order],
            REPORTED_AT: reported_at,
        }
    )
    frame = frame.select(
        _padded(TX_ID, "", id_width),
        pl.col(TX_TIME).cast(TRANSACTION_COLUMNS[TX_TIME]),
        _padded(CUSTOMER_ID, "C", len(str(config.customers - 1))),
        _padded(TERMINAL_ID, "T", len(str(config.terminals - 1))),
        pl.col(AMOUNT).cast(TRANSACTION_COLUMNS[AMOUNT]),
        pl.lit(config.currency, dtype=TRANSACTION_COLUMNS[CURRENCY]).alias(CURRENCY),
        pl.col(IS_FRAUD).cast(TRANSACTION_COLUMNS[IS_FRAUD]),
        pl.col(FRAUD_SCENARIO).cast(TRANSACTION_COLUMNS[FRAUD_SCENARIO]),
        pl.when(pl.col(IS_FRAUD))
        .then(pl.col(REPORTED_AT))
        .otherwise(None)
        .cast(TRANSACTION_COLUMNS[REPORTED_AT])
        .alias(REPORTED_AT),
    )
    assert frame.schema == pl.Schema(TRANSACTION_COLUMNS), frame.schema
    return frame


def _padded(column: str, prefix: str, width: int) -> pl.Expr:
    """An integer index column as a zero-padded, prefixed string id."""
    digits = pl.col(column).cast(pl.String).str.zfill(width)
    return (pl.lit(prefix) + digits if prefix else digits).alias(column)


def _profiles(config: SimulationConfig, rng: np.random.Generator) -> _Profiles:
    """Place customers and terminals; find the terminals each customer can reach."""
    customer_xy = rng.uniform(0.0, GRID_SIZE, size=(config.customers, 2))
    mean_amount = rng.uniform(5.0, 100.0, size=config.customers)
    mean_per_day = rng.uniform(0.0, 4.0, size=config.customers)
    terminal_xy = rng.uniform(0.0, GRID_SIZE, size=(config.terminals, 2))

    radius_squared = config.radius**2
    batch = max(1, _DISTANCE_BATCH_CELLS // config.terminals)
    counts = np.zeros(config.customers, dtype=np.int64)
    reach: list[IntArray] = []
    for first in range(0, config.customers, batch):
        block = customer_xy[first : first + batch]
        dx = block[:, 0, None] - terminal_xy[None, :, 0]
        dy = block[:, 1, None] - terminal_xy[None, :, 1]
        rows, columns = np.nonzero(dx * dx + dy * dy < radius_squared)
        counts[first : first + len(block)] = np.bincount(rows, minlength=len(block))
        reach.append(columns.astype(np.int64))
    reach_start = np.zeros(config.customers + 1, dtype=np.int64)
    np.cumsum(counts, out=reach_start[1:])
    return _Profiles(
        mean_amount=mean_amount,
        std_amount=mean_amount / 2.0,
        mean_per_day=mean_per_day,
        reach_start=reach_start,
        reach_terminals=np.concatenate(reach) if reach else np.zeros(0, dtype=np.int64),
    )


def _transactions(
    config: SimulationConfig, profiles: _Profiles, rng: np.random.Generator
) -> _Draws:
    """Draw every customer's transactions: counts, times, amounts, terminals."""
    counts = rng.poisson(profiles.mean_per_day[:, None], size=(config.customers, config.days))
    reachable = np.diff(profiles.reach_start)
    counts[reachable == 0] = 0  # no terminal in reach: no transactions
    per_customer = counts.sum(axis=1)
    customer = np.repeat(np.arange(config.customers, dtype=np.int64), per_customer)
    day = np.repeat(
        np.tile(np.arange(config.days, dtype=np.int64), config.customers), counts.ravel()
    )
    drawn = len(customer)

    time_of_day = np.floor(rng.normal(TIME_OF_DAY_MEAN_MS, TIME_OF_DAY_STD_MS, size=drawn))
    mean = profiles.mean_amount[customer]
    normal_amount = rng.normal(mean, profiles.std_amount[customer])
    fallback = rng.uniform(0.0, 2.0 * mean)
    amount: FloatArray = np.where(normal_amount < 0, fallback, normal_amount).round(2)
    pick = rng.random(size=drawn)
    terminal = profiles.reach_terminals[
        profiles.reach_start[customer] + (pick * reachable[customer]).astype(np.int64)
    ]

    in_day = (time_of_day >= 0) & (time_of_day < DAY_MS)
    return _Draws(
        customer=customer[in_day],
        day=day[in_day],
        time_of_day_ms=time_of_day[in_day].astype(np.int64),
        terminal=terminal[in_day],
        amount=amount[in_day],
    )


def _frauds(
    config: SimulationConfig, draws: _Draws, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int8], FloatArray]:
    """Label the three scenarios; return the scenario per transaction and final amounts."""
    scenario = np.where(draws.amount > FRAUD_AMOUNT_THRESHOLD, SCENARIO_AMOUNT, GENUINE).astype(
        np.int8
    )

    # Scenario 2: a (terminal, day) table of compromise, filled per day of draw.
    compromised = np.zeros((config.terminals, config.days), dtype=np.bool_)
    per_day = min(config.compromised_terminals_per_day, config.terminals)
    for first_day in range(config.days):
        terminals = rng.choice(config.terminals, size=per_day, replace=False)
        compromised[terminals, first_day : first_day + config.terminal_compromise_days] = True
    scenario[compromised[draws.terminal, draws.day]] = SCENARIO_TERMINAL

    # Scenario 3: draws are customer-major and by day within a customer, so a
    # customer's window is a slice found by binary search.
    customer_start = np.searchsorted(draws.customer, np.arange(config.customers + 1))
    multiplied = np.zeros(len(draws.amount), dtype=np.bool_)
    per_day = min(config.compromised_customers_per_day, config.customers)
    for first_day in range(config.days):
        customers = rng.choice(config.customers, size=per_day, replace=False)
        windows = []
        for customer in customers:
            lo, hi = customer_start[customer], customer_start[customer + 1]
            days = draws.day[lo:hi]
            begin = lo + np.searchsorted(days, first_day, side="left")
            end = lo + np.searchsorted(
                days, first_day + config.customer_compromise_days, side="left"
            )
            windows.append(np.arange(begin, end, dtype=np.int64))
        pool = np.concatenate(windows) if windows else np.zeros(0, dtype=np.int64)
        chosen = rng.choice(pool, size=len(pool) // 3, replace=False)
        multiplied[chosen] = True
    scenario[multiplied] = SCENARIO_CUSTOMER
    amount = np.where(multiplied, np.round(draws.amount * FRAUD_AMOUNT_FACTOR, 2), draws.amount)
    return scenario, amount


def _umask() -> int:
    """The process umask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_dataset(frame: pl.DataFrame, path: Path) -> None:
    """Write a dataset as Parquet, or as CSV when the suffix is ``.csv``, atomically.

    CSV times are ISO-8601 UTC with milliseconds (``2018-04-01T00:00:31.337Z``) and
    amounts have two decimals. The file appears only when complete (written to a
    temporary file in the same directory, then renamed), so a failed or interrupted
    run never leaves a truncated dataset behind. The bytes depend only on the rows.

    Args:
        frame: The dataset.
        path: Destination; its suffix picks the format.

    Raises:
        ValueError: The suffix is neither ``.parquet`` nor ``.csv``.
        OSError: The file cannot be written.
    """
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"unknown file extension {path.suffix!r}: use .parquet or .csv")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(descriptor)
    try:
        if suffix == ".csv":
            frame.write_csv(temporary, datetime_format="%Y-%m-%dT%H:%M:%S%.3fZ", float_precision=2)
        else:
            frame.write_parquet(temporary, compression="zstd", statistics=True)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; use the usual mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.debug("wrote %d transactions to %s", frame.height, path)
