"""``fraudstream generate``: write a simulated, labelled transaction dataset.

A thin shell over ``features.simulator``: it checks the options before spending any
time (counts, date, output suffix and directory), generates, writes Parquet (CSV when
the file name ends in ``.csv``) and prints one summary line. Bad options end with one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path
from typing import Annotated, NoReturn

import typer

DEFAULT_OUT = Path("data/transactions.parquet")
#: Output formats, by file suffix (``features.simulator.SUPPORTED_SUFFIXES``, repeated here
#: so that the CLI starts without importing numpy and polars).
SUPPORTED_SUFFIXES = (".parquet", ".csv")


def generate(
    customers: Annotated[int, typer.Option(help="Number of customers.")] = 5_000,
    terminals: Annotated[int, typer.Option(help="Number of terminals.")] = 10_000,
    days: Annotated[int, typer.Option(help="Number of simulated days.")] = 183,
    start_date: Annotated[
        str, typer.Option(help="First simulated day, YYYY-MM-DD (UTC).")
    ] = "2018-04-01",
    radius: Annotated[
        float, typer.Option(help="A customer uses the terminals closer than this.")
    ] = 5.0,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 0,
    out: Annotated[
        Path, typer.Option(help="Output file: .parquet, or .csv for CSV.")
    ] = DEFAULT_OUT,
) -> None:
    """Simulate card transactions with frauds (the handbook's generator) and write them."""
    # Imported here: numpy and polars would slow down every other command's start.
    from features.dataset import FRAUD_SCENARIO, IS_FRAUD
    from features.simulator import SimulationConfig, simulate, write_dataset

    try:
        config = SimulationConfig(
            customers=customers,
            terminals=terminals,
            days=days,
            start_date=_parse_date(start_date),
            radius=radius,
            seed=seed,
        )
        _check_output(out)
    except ValueError as exc:
        _fail(str(exc))

    started = time.perf_counter()
    frame = simulate(config)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_dataset(frame, out)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc}")
    elapsed = time.perf_counter() - started

    frauds = int(frame[IS_FRAUD].sum())
    by_scenario = dict(frame[FRAUD_SCENARIO].value_counts().iter_rows())
    scenarios = ", ".join(f"{s}: {by_scenario.get(s, 0)}" for s in (1, 2, 3))
    typer.echo(
        f"wrote {frame.height} transactions to {out} in {elapsed:.1f}s: {frauds} frauds "
        f"({frauds / max(frame.height, 1):.2%}; by scenario {scenarios})"
    )


def _parse_date(text: str) -> date:
    """A calendar date from YYYY-MM-DD, or a ValueError that says what was expected."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"start date must be YYYY-MM-DD, got {text!r}") from None


def _check_output(out: Path) -> None:
    """Refuse an output path that cannot be written, before generating anything."""
    if out.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(f"unknown file extension {out.suffix!r} for {out}: use .parquet or .csv")
    if out.is_dir():
        raise ValueError(f"{out} is a directory")
    directory = out.parent
    while not directory.exists():  # the nearest existing ancestor must be writable
        directory = directory.parent
    if not directory.is_dir():
        raise ValueError(f"cannot write {out}: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK) or (
        out.exists() and not os.access(out, os.W_OK)
    ):
        raise ValueError(f"cannot write {out}: permission denied")


def _fail(message: str) -> NoReturn:
    """Print one line to stderr and exit 2 (bad usage), without a traceback."""
    typer.echo(f"fraudstream generate: {message}", err=True)
    raise typer.Exit(2)
