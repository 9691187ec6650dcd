"""``fraudstream demo``: the main job end to end, in about two minutes.

It brings up the local Kafka broker and redis-server, declares the product topics,
simulates a labelled dataset and computes its features offline, trains, registers and
promotes a model (``fraudstream train``, ``fraudstream model promote``), starts a stream
worker (``fraudstream worker``), replays the weeks before the test period at full speed
so the worker's windows hold their history, then replays the test week, with its fraud
reports, paced to take about a minute (``fraudstream replay --speed``), while it shows
the worker's progress. It ends with a summary read from the alert topic: alerts,
precision and recall against the labels, the same model scored offline for comparison,
event-to-alert latency percentiles; then it stops what it started and deletes its
topics and Redis keys. Each run has names of its own (``streams.demorun``), so a second
run never sees the first one's data.
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.error import URLError

import typer

from streams.settings import Settings

# Polars, the features and the models take seconds to import: each function imports what
# it uses, so that `fraudstream demo --help` needs none of them.
if TYPE_CHECKING:
    import polars as pl

    from features.simulator import SimulationConfig
    from streams.demorun import DemoRun

WORKER_READY_TIMEOUT_S = 90.0


def demo_data() -> SimulationConfig:
    """A dataset small enough to simulate and featurise in about a second.

    Compromises are scaled down with the population, to keep the handbook's fraud mix.
    """
    from features.simulator import SimulationConfig

    return SimulationConfig(
        customers=1_000,
        terminals=2_000,
        days=60,
        compromised_terminals_per_day=1,
        compromised_customers_per_day=1,
    )


class WorkerStartError(RuntimeError):
    """The demo's worker exited or never served its web port."""


def demo(
    ctx: typer.Context,
    test_seconds: Annotated[
        float, typer.Option(help="Wall-clock seconds the test week's replay takes.")
    ] = 60.0,
    keep_running: Annotated[
        bool,
        typer.Option(help="Leave Kafka, Redis and the worker running, to explore afterwards."),
    ] = False,
) -> None:
    """Run the demo: a model scores a replayed week live and the alerts are summarised."""
    from streams.demorun import DemoRun
    from streams.localinfra import ServiceError, local_services

    run = DemoRun.new(ctx.obj)
    settings = run.settings
    say = typer.echo
    say("1/8 local infrastructure")
    started_services = []
    for service in local_services(settings):
        was_running = service.status().pid is not None
        try:
            say(f"    {service.start()}")
        except ServiceError as exc:
            say(f"fraudstream demo: {service.name}: {exc}", err=True)
            raise typer.Exit(1) from None
        if not was_running:
            started_services.append(service)

    try:
        _run(run, say, test_seconds, keep_running)
    except WorkerStartError as exc:
        say(f"fraudstream demo: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if not keep_running:
            topics, keys = run.clean(others_only=False)
            say(f"    deleted this run's {topics} topics and {keys} Redis keys")
            say("demo done: rerun with --keep-running to explore the topics afterwards.")
            for service in reversed(started_services):
                say(f"    {service.stop()}")


def _run(
    run: DemoRun, say: Callable[[str], object], test_seconds: float, keep_running: bool
) -> None:
    import polars as pl

    from streams.alertsummary import summarise_alerts
    from streams.kafka import ensure_topics, product_topics
    from streams.redisclient import connect

    settings = run.settings
    say("2/8 topics and redis")
    topics, keys = run.clean(others_only=True)
    if topics or keys:
        say(f"    deleted {topics} topics and {keys} Redis keys of earlier demo runs")
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    say(
        f"    {len(settings.topic_names)} topics with prefix {settings.topic_prefix!r}, "
        f"{settings.topic_partitions} partitions each"
    )
    client = connect(settings)
    try:
        info = client.info("server")
        say(f"    redis {info['redis_version']} at {settings.redis_url} answers")
    finally:
        client.close()

    say("3/8 data and features")
    dataset, transactions, featurised = _data_and_features(settings, say)
    periods = DemoPeriods.of(transactions)

    say("4/8 model")
    version = _train_and_promote(settings, dataset, say)

    say("5/8 stream worker")
    worker = DemoWorker(settings)
    try:
        elapsed = worker.start()
        say(f"    worker up after {elapsed:.1f}s: metrics at {worker.metrics_url}")

        say(f"6/8 history: {periods.describe_history()}, at full speed")
        warmup = transactions.filter(
            (pl.col("tx_time") >= periods.history_start) & (pl.col("tx_time") < periods.test_start)
        ).height
        _replay(
            settings,
            dataset,
            say,
            "--from",
            periods.history_start.isoformat(),
            "--to",
            periods.test_start.isoformat(),
        )
        seconds = worker.wait_scored(warmup, timeout_s=300)
        seconds += worker.wait_scored(
            warmup, timeout_s=300, metric="fraudstream_terminal_transactions_total"
        )
        say(
            f"    the worker scored {warmup:,} transactions and aggregated them by terminal "
            f"in {seconds:.1f}s"
        )

        speed = periods.test_seconds_of_event_time / test_seconds
        say(
            f"7/8 test week {periods.describe_test()}: replayed in ~{test_seconds:.0f}s "
            f"(x{speed:,.0f} real time), fraud reports included"
        )
        tested = transactions.filter(pl.col("tx_time") >= periods.test_start).height
        replay = _start_replay(
            settings,
            dataset,
            "--from",
            periods.test_start.isoformat(),
            "--to",
            periods.test_end.isoformat(),
            "--speed",
            str(speed),
        )
        worker.follow(replay, warmup + tested, say)
        worker.wait_scored(warmup + tested, timeout_s=120)

        say("8/8 what the alert topic says")
        summary = summarise_alerts(
            settings, featurised, version, since=periods.test_start, days=periods.test_days
        )
        for line in summary.lines():
            say(f"    {line}")
    finally:
        if not keep_running:
            worker.stop()
            say("    worker stopped")
    if keep_running:
        say(
            f"still running: worker (pid {worker.pid}), Kafka and Redis. Try "
            f"`FRAUDSTREAM_TOPIC_PREFIX={settings.topic_prefix} fraudstream alerts --last 5` and "
            f"`curl -s {worker.metrics_url} | grep ^fraudstream_`; "
            "stop with `fraudstream infra down` and `kill <pid>`."
        )


def _data_and_features(
    settings: Settings, say: Callable[[str], object]
) -> tuple[Path, pl.DataFrame, pl.DataFrame]:
    """Simulate a dataset, write it, and compute the model's features offline."""
    from features.offline import compute_features
    from features.simulator import simulate, write_dataset
    from features.spec import DEFAULT_FEATURES

    started = time.monotonic()
    data = demo_data()
    transactions = simulate(data)
    path = settings.local_dir / "demo" / "transactions.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dataset(transactions, path)
    frauds = int(transactions["is_fraud"].sum())
    say(
        f"    simulated {transactions.height:,} transactions ({frauds:,} frauds, "
        f"{frauds / transactions.height:.2%}) of {data.customers:,} customers "
        f"over {data.days} days -> {path}"
    )
    featurised = compute_features(transactions)
    say(
        f"    computed {len(DEFAULT_FEATURES.names)} features per transaction offline "
        f"in {time.monotonic() - started:.1f}s (simulation included)"
    )
    return path, transactions, featurised


@dataclass(frozen=True)
class DemoPeriods:
    """The demo's periods: the model's test week, and the history its windows need.

    Attributes:
        history_start: First event time replayed (enough history for every window).
        test_start: First event time of the test week.
        test_days: Days of the test week.
    """

    history_start: datetime
    test_start: datetime
    test_days: int

    @classmethod
    def of(cls, transactions: pl.DataFrame) -> DemoPeriods:
        """The periods of the protocol's latest split of a dataset."""
        from features.spec import DEFAULT_FEATURES, Entity
        from models.protocol import HANDBOOK_PROTOCOL, latest_train_start

        train_start = latest_train_start(transactions, HANDBOOK_PROTOCOL)
        test_day = train_start + timedelta(
            days=HANDBOOK_PROTOCOL.train_days + HANDBOOK_PROTOCOL.delay_days
        )
        test_start = datetime(test_day.year, test_day.month, test_day.day, tzinfo=UTC)
        reach = timedelta(milliseconds=DEFAULT_FEATURES.retention_ms(Entity.TERMINAL))
        first = transactions["tx_time"].min()
        assert isinstance(first, datetime)
        return cls(max(first, test_start - reach), test_start, HANDBOOK_PROTOCOL.test_days)

    @property
    def test_end(self) -> datetime:
        """End of the test week (exclusive); reports after it are not replayed."""
        return self.test_start + timedelta(days=self.test_days)

    @property
    def test_seconds_of_event_time(self) -> float:
        """Length of the test week, in seconds."""
        return self.test_days * 86_400.0

    def describe_history(self) -> str:
        """The history period, for people."""
        return f"{self.history_start:%Y-%m-%d} .. {self.test_start:%Y-%m-%d}"

    def describe_test(self) -> str:
        """The test week, for people."""
        end = self.test_start + timedelta(days=self.test_days - 1)
        return f"{self.test_start:%Y-%m-%d} .. {end:%Y-%m-%d}"


def _train_and_promote(settings: Settings, dataset: Path, say: Callable[[str], object]) -> str:
    """Train, register and promote a model with the user-facing commands; its version."""
    trained = _fraudstream(
        settings, "train", "--data", str(dataset), "--model", "logistic_regression"
    ).splitlines()
    for line in trained:
        if line.startswith(("train ", "threshold ")):
            say(f"    {' '.join(line.split())}")
        elif line.startswith("ours:"):
            auc, ap = line.split()[2:4]
            say(f"    logistic regression (quick to train): test AUC {auc}, average precision {ap}")
    version = trained[-1].split()[1]  # "registered VERSION in DIRECTORY"
    for line in _fraudstream(settings, "model", "promote", version).splitlines()[-1:]:
        say(f"    {line}")
    return version


def _replay(settings: Settings, dataset: Path, say: Callable[[str], object], *args: str) -> None:
    """Replay (part of) the dataset with the user-facing command; show its last lines."""
    for line in _fraudstream(settings, "replay", str(dataset), *args).splitlines()[-2:]:
        say(f"    {line}")


def _start_replay(settings: Settings, dataset: Path, *args: str) -> subprocess.Popen[str]:
    """Start a paced ``fraudstream replay`` in a child process."""
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "--log-level", "warn", "replay", str(dataset), *args],
        env={**os.environ, **settings.as_env()},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


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


class DemoWorker:
    """The demo's ``fraudstream worker`` child process, watched through its metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.address = f"{settings.web_host}:{settings.web_port}"
        self.metrics_url = f"http://{self.address}/metrics"
        self.log = settings.local_dir / "demo" / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The worker's process id, once started."""
        return self.process.pid if self.process else None

    def start(self) -> float:
        """Start the worker; wait until it serves its metrics; seconds it took.

        Raises:
            WorkerStartError: It exited or did not serve in time.
        """
        started = time.monotonic()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", "--log-level", "warn", "worker"],
                env={**os.environ, **self.settings.as_env()},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        while self.metric("fraudstream_transactions_total") is None:
            self._check_alive()
            if time.monotonic() - started > WORKER_READY_TIMEOUT_S:
                raise WorkerStartError("the worker did not serve its metrics in time")
            time.sleep(0.5)
        return time.monotonic() - started

    def metric(self, name: str) -> float | None:
        """One unlabelled sample of the worker's metrics; None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=2) as response:
                text = response.read().decode()
        except (URLError, OSError):
            return None
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    def wait_scored(
        self, count: int, timeout_s: float, metric: str = "fraudstream_transactions_total"
    ) -> float:
        """Wait until a counter of the worker (scored transactions) reaches ``count``.

        Returns:
            Seconds waited.

        Raises:
            WorkerStartError: It exited or did not get there in time.
        """
        started = time.monotonic()
        while (self.metric(metric) or 0) < count:
            self._check_alive()
            if time.monotonic() - started > timeout_s:
                raise WorkerStartError(f"the worker's {metric} did not reach {count:,} in time")
            time.sleep(0.5)
        return time.monotonic() - started

    def follow(
        self, replay: subprocess.Popen[str], total: int, say: Callable[[str], object]
    ) -> None:
        """Show the worker's progress every 10 s until the replay ends."""
        next_report = time.monotonic() + 10
        while replay.poll() is None:
            self._check_alive()
            if time.monotonic() >= next_report:
                scored = self.metric("fraudstream_transactions_total") or 0
                alerts = self.metric("fraudstream_alerts_total") or 0
                say(f"    ... {scored:,.0f} of {total:,} transactions scored, {alerts:,.0f} alerts")
                next_report += 10
            time.sleep(0.25)
        output = (replay.stdout.read() if replay.stdout else "").strip().splitlines()
        if replay.returncode != 0:
            raise WorkerStartError(f"the replay failed: {' '.join(output[-2:])}")
        for line in output[-2:]:
            say(f"    {line}")

    def stop(self) -> None:
        """SIGTERM the worker and wait for it (SIGKILL after a minute)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise WorkerStartError(
                f"the worker exited with code {self.process.returncode}; see {self.log}"
            )
