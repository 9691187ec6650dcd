"""``fraudstream demo``: the main job end to end, as far as it is built.

Today it brings up the local Kafka broker and redis-server, declares the product topics,
simulates a small labelled dataset, computes its features offline, trains, registers
and promotes a model on it (``fraudstream train``, ``fraudstream model promote``),
replays the dataset into Kafka with ``fraudstream replay``, starts a stream worker,
waits until the worker is serving, stops it, and says what ran and what is not built
yet. It grows with the pipeline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import polars as pl
import redis
import typer

from features.offline import compute_features
from features.simulator import SimulationConfig, simulate, write_dataset
from features.spec import DEFAULT_FEATURES
from streams.kafka import ensure_topics, product_topics
from streams.localinfra import ServiceError, local_services
from streams.settings import Settings

WORKER_READY_TIMEOUT_S = 90.0

NOT_BUILT_YET = ("scoring agents and alerts (the live pipeline)",)

#: A dataset small enough to simulate and featurise in about a second.
#: Compromises are scaled down with the population, to keep the handbook's fraud mix.
DEMO_DATA = SimulationConfig(
    customers=1_000,
    terminals=2_000,
    days=60,
    compromised_terminals_per_day=1,
    compromised_customers_per_day=1,
)


class WorkerStartError(RuntimeError):
    """The demo's worker exited or never served its web port."""


def demo(ctx: typer.Context) -> None:
    """Run the demo: infrastructure up, topics, a worker that starts and stops cleanly."""
    settings: Settings = ctx.obj
    say = typer.echo
    say("1/7 local infrastructure")
    for service in local_services(settings):
        try:
            say(f"    {service.start()}")
        except ServiceError as exc:
            say(f"fraudstream demo: {service.name}: {exc}", err=True)
            raise typer.Exit(1) from None

    say("2/7 topics")
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    for role, name in settings.topic_names.items():
        say(f"    {role:<14} {name} ({settings.topic_partitions} partitions)")

    say("3/7 redis")
    password = settings.redis_password
    client = redis.Redis.from_url(
        settings.redis_url, password=password.get_secret_value() if password else None
    )
    try:
        info = client.info("server")
        say(f"    redis {info['redis_version']} at {settings.redis_url} answers")
    finally:
        client.close()

    say("4/7 data and features")
    dataset = _data_and_features(settings, say)

    say("5/7 model")
    _train_and_promote(settings, dataset, say)

    say("6/7 replay into Kafka")
    _replay(settings, dataset, say)

    say("7/7 stream worker")
    try:
        elapsed = _run_worker_until_ready(settings)
    except WorkerStartError as exc:
        say(f"fraudstream demo: {exc}", err=True)
        raise typer.Exit(1) from None
    say(
        f"    worker served http://{settings.web_host}:{settings.web_port}/ after "
        f"{elapsed:.1f}s and stopped cleanly"
    )

    say("demo done. Not built yet: " + "; ".join(NOT_BUILT_YET) + ".")


def _data_and_features(settings: Settings, say: Callable[[str], object]) -> Path:
    """Simulate a small dataset, write it, and compute the model's features offline."""
    started = time.monotonic()
    transactions = simulate(DEMO_DATA)
    path = settings.local_dir / "demo" / "transactions.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dataset(transactions, path)
    frauds = int(transactions["is_fraud"].sum())
    say(
        f"    simulated {transactions.height:,} transactions ({frauds:,} frauds, "
        f"{frauds / transactions.height:.2%}) of {DEMO_DATA.customers:,} customers "
        f"over {DEMO_DATA.days} days -> {path}"
    )
    featurised = compute_features(transactions)
    say(
        f"    computed {len(DEFAULT_FEATURES.names)} features per transaction offline "
        f"in {time.monotonic() - started:.1f}s (simulation included)"
    )
    risk = "TERMINAL_ID_RISK_7DAY_WINDOW"
    by_label = featurised.group_by("is_fraud").agg(pl.col(risk).mean()).sort("is_fraud")
    genuine, fraud = by_label[risk].to_list()
    say(f"    e.g. mean {risk}: {fraud:.3f} for frauds, {genuine:.3f} for genuine")
    return path


def _train_and_promote(settings: Settings, dataset: Path, say: Callable[[str], object]) -> None:
    """Train, register and promote a model with the user-facing commands."""
    trained = _fraudstream(settings, "train", "--data", str(dataset)).splitlines()
    for line in trained:
        if line.startswith(("train ", "threshold ")):
            say(f"    {' '.join(line.split())}")
        elif line.startswith("ours:"):
            say(f"    test AUC AP CP@k, ours | handbook's: {' '.join(line.split()[1:])}")
    version = trained[-1].split()[1]  # "registered VERSION in DIRECTORY"
    for line in _fraudstream(settings, "model", "promote", version).splitlines()[-1:]:
        say(f"    {line}")


def _replay(settings: Settings, dataset: Path, say: Callable[[str], object]) -> None:
    """Replay the dataset with the user-facing command, as fast as the broker takes it."""
    for line in _fraudstream(settings, "replay", str(dataset)).splitlines()[-2:]:
        say(f"    {line}")


def _fraudstream(settings: Settings, *args: str) -> str:
    """Run a fraudstream command in a child process, as a user would; return its output."""
    result = subprocess.run(
        [sys.executable, "-m", "streams", "--log-level", "warn", *args],
        env={**os.environ, **settings.as_env()},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        typer.echo(f"fraudstream demo: {args[0]} failed: {result.stderr.strip()}", err=True)
        raise typer.Exit(1)
    return result.stdout.strip()


def _run_worker_until_ready(settings: Settings) -> float:
    """Start ``fraudstream worker`` in a child process; stop it once its web answers."""
    started = time.monotonic()
    log = settings.local_dir / "demo" / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams", "--log-level", "warn", "worker"],
            env={**os.environ, **settings.as_env()},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://{settings.web_host}:{settings.web_port}/"
        while True:
            if worker.poll() is not None:
                raise WorkerStartError(f"worker exited with code {worker.returncode}; see {log}")
            if time.monotonic() - started > WORKER_READY_TIMEOUT_S:
                raise WorkerStartError("worker did not serve its web port in time")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except (URLError, OSError):
                time.sleep(0.5)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
