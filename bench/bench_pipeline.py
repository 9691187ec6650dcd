"""The live pipeline end to end: throughput of a worker, and event-to-alert latency.

Run: ``.venv/bin/python bench/bench_pipeline.py [--transactions N] [--partitions P] ...``
with the local Kafka broker and redis-server up (``fraudstream infra up``). Measures, in
one run on one machine, what the issue asks of the live pipeline:

0. Setup (not timed): simulate a dataset (``features.simulator``; ``--transactions``
   sets its size through the number of customers), train a logistic regression on it and
   register and promote it in a temporary registry (``fraudstream train``, ``fraudstream
   model promote --no-publish``, child processes, as the demo does), then pre-load the
   whole dataset into the transactions and fraud-reports topics with ``fraudstream
   replay`` at full speed, before any worker starts: the throughput below is the
   worker's, not the producer's.
1. Sustained throughput of one ``fraudstream worker`` (``python -m streams worker``,
   ``--partitions`` partitions) through the whole pipeline: score agent, terminal agents,
   Redis tables, alerts, score records and forwards. Progress is read from the worker's
   ``/metrics`` every ``--poll`` seconds: ``fraudstream_transactions_total`` (scored) and
   ``fraudstream_terminal_transactions_total`` (applied by the terminal agent; dead
   letters count as done). Three rates: "steady", scored between the samples at 10 % and
   90 % of the transactions (warm-up and tail excluded); "1st->last", from the first
   sample with a transaction scored to the last; "all agents", from the first scored to
   the terminal agent's last forward applied, the rate at which the whole pipeline is
   done (on a backlog the scorer runs ahead of the terminal agent, which only gets the
   forwards the scorer has sent). Once with the default settings (no score records) and
   once with ``FRAUDSTREAM_EMIT_SCORES=true``.
2. The ceiling: a pass-through Faust agent (bench/pipeline_passthrough_worker.py) in its
   own worker process, built by ``create_app`` with the same settings, reading the same
   topic in ``take_events`` micro-batches of the same size and sending each event's bytes
   to one output topic, one send per event. The pipeline's rate is given as a share of it.
3. Latency at half load: a pipeline worker on topics of its own, pre-loaded with the
   first half of the dataset's days (so that customer and terminal windows are warm, as
   in production, and the model sees the kind of features it was trained on), caught up
   on them and idle; then ``fraudstream replay --rate R --from <the middle day>`` (R =
   half the all-agents rate of 1, or ``--latency-rate``) for ``--latency-seconds``. The
   replay stamps every transaction with the wall-clock time it was handed to the producer
   (header ``fraudstream-sent-ms``). Reported: the alerts' own ``latency_ms`` (alert sent
   minus that header, computed by the worker), and, joining each alert to its
   transaction's header by tx_id, the alert message's Kafka timestamp minus the header
   and the time a consumer of the alerts topic (this process) received it minus the
   header. Two more, over every transaction rather than the alerted few: the Kafka
   timestamp of its forward to the terminal agents minus the header (the scorer's
   latency), and the time a plain consumer of the transactions topic's partition 0 (this
   process; a sample, to spare the worker's cores) received it minus the header (Kafka's
   own share, the floor), and the same paced replay
   through the pass-through agent of 2 on topics of its own (its copy's Kafka timestamp
   minus the header: the ceiling's latency). Also the alerts' latency
   by 5 s slice of the replay (a backlog grows, a stall is a spike), and the worker's
   per-batch processing time and Redis flush time from its histograms. A paced replay
   keeps the dataset's event times: days of them a second, which the terminal
   watermarks treat as a replay (a transaction may wait for the reports sent before
   it). ``--latency-live`` sends the same transactions as a card network does instead,
   each stamped with the moment it is sent (bench/live_sender.py: a plain aiokafka
   producer, Kafka's default partitioner), to the pipeline and the pass-through alike.
4. Two workers on two partitions (topics with 2 partitions, pre-loaded the same way), their
   rates added from both ``/metrics`` pages, next to one worker on the same 2 partitions.
   The window of the two-worker rate starts once both have scored transactions (after the
   consumer group's rebalance) and at 10 % at the earliest.

Every number is printed with the load average (os.getloadavg) before and after it, and
the CPU seconds per transaction of the worker(s) in the steady window, which the load of
the machine distorts less. If a target is missed (or with ``--profile yes``), one more
pipeline worker runs on the data of 1 with py-spy (bench/README.md: not a project
dependency) attached for ``--profile-seconds`` from 10 % of the transactions, and the top
functions by own and cumulative samples are printed (that run's rate is not a
benchmark). ``--profile-latency`` attaches py-spy, idle threads included, to the latency
worker during the paced replay (``--profile-latency busy``: busy samples only, where its
CPU goes; ``gil``: only the thread holding the GIL, what keeps the event loop waiting);
the raw stacks stay with the logs. ``--skip-throughput --latency-rate R`` runs 3 alone.
Training needs about 40 days of data: keep ``--days`` at 60 or so.

Isolation: every name of the run starts with ``fsbench-<run>-`` (topics, consumer groups,
app ids) or ``fsbench:<run>:`` (Redis keys); each worker variant has its own app id,
output topics and Redis namespace and reads the shared pre-loaded input topics with its
own consumer group. Everything is deleted at the end, even on failure or Ctrl-C, unless
``--keep``; worker logs stay in the temporary directory the run names.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import URLError

import orjson
import polars as pl
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from run_cleanup import delete_run_data

from features.simulator import SimulationConfig, simulate, write_dataset
from streams.app import create_app
from streams.contracts import DecodeError
from streams.kafka import TopicSpec, client_options, ensure_topics, product_topics, sent_at_ms
from streams.localinfra import local_services
from streams.pipeline.forwards import ForwardRow, decode_forwards
from streams.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PASSTHROUGH = Path(__file__).with_name("pipeline_passthrough_worker.py")
LIVE_SENDER = Path(__file__).with_name("live_sender.py")
PY_SPY = Path(sys.executable).with_name("py-spy")

#: Transactions per customer and day of the simulator (measured: 232,217 for 2,000
#: customers over 60 days); turns --transactions into a number of customers.
TX_PER_CUSTOMER_DAY = 1.935

#: Seconds the latency worker's CPU is measured idle, caught up, before the paced replay.
IDLE_S = 5.0

TRANSACTIONS = "fraudstream_transactions_total"
DLQ = "fraudstream_dlq_records_total"
WATERMARK_WAIT = "fraudstream_terminal_watermark_wait_seconds"

#: The speed goals (issue #20): one worker's steady scoring rate at least 1.3 times the
#: pass-through agent's of the same run, at most 90 us of worker CPU per transaction in
#: steady state, and an event-to-alert p99 of at most 20 ms at half load.
PIPELINE_TARGET_SHARE = 1.3
CPU_TARGET_US = 90.0
P99_TARGET_MS = 20.0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def code_state() -> str:
    """The code the workers run: the (shared, possibly edited) working tree."""
    head = git("rev-parse", "--short", "HEAD")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "streams", "features", "models"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout
    changed = [line for line in status.splitlines() if line.strip()]
    if not changed:
        return f"commit {head}, streams/features/models as committed"
    names = ", ".join(line[3:] for line in changed[:8]) + (" ..." if len(changed) > 8 else "")
    return f"commit {head} + uncommitted changes in {names}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (None if it is gone)."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


def histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` of a Prometheus histogram
    (series of every label set added up); NaN without observations."""
    counts: dict[float, float] = {}
    for series, value in metrics.items():
        if series.startswith(f"{name}_bucket{{"):
            found = re.search(r'le="([^"]+)"', series)
            if found:
                le = float(found.group(1))
                counts[le] = counts.get(le, 0.0) + value
    if not counts or counts.get(math.inf, 0.0) <= 0:
        return math.nan
    total = counts[math.inf]
    return next(le for le in sorted(counts) if counts[le] >= q * total)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Counters and histogram series of ``after`` minus those of ``before``."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


# -- processes -----------------------------------------------------------------------


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = logs / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.spawned_at = 0.0

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.spawned_at = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=REPO,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def cpu_s(self) -> float | None:
        return process_cpu_s(self.pid) if self.alive else None

    async def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def stop(self, timeout_s: float = 60.0) -> None:
        if not self.alive:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            print(f"    ({self.name} did not stop in {timeout_s:.0f} s: killed)")
            self.kill()
            await self.process.wait()

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 25) -> str:
        return f"--- {self.log_path}\n" + "\n".join(self.log_text().splitlines()[-lines:])


class Worker(Proc):
    """A worker process (pipeline or pass-through) with a /metrics page."""

    def __init__(
        self, name: str, argv: list[str], settings: Settings, logs: Path, extra_env: dict[str, str]
    ) -> None:
        super().__init__(name, argv, {**os.environ, **settings.as_env(), **extra_env}, logs)
        self.settings = settings
        self.port = settings.web_port

    def scrape(self) -> dict[str, float] | None:
        """The worker's metrics, summed over labels (also each series under its full
        name, labels included); None if the page does not answer."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except (URLError, OSError, ValueError):
            return None
        values: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            try:
                number = float(value)
            except ValueError:
                continue
            values[name] = values.get(name, 0.0) + number
            if name != name_labels:
                values[name_labels] = number
        return values


# -- the run -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float
    counts: tuple[float, ...]  # per worker: transactions scored
    terminal: float  # all workers: transactions applied by the terminal agent + dead letters
    cpu: tuple[float | None, ...]  # per worker
    services: dict[str, float | None]

    @property
    def total(self) -> float:
        return sum(self.counts)


@dataclass
class Throughput:
    """What one throughput phase measured."""

    label: str
    workers: int
    partitions: int
    expected: int
    steady_rate: float
    overall_rate: float
    #: Transactions over first scored -> the terminal agent done with the last forward.
    all_agents_rate: float | None
    #: Terminal agent's applied transactions + dead letters when scoring was done.
    terminal_when_scored: float
    window: str
    cpu_us: float
    cpu_share: float  # worker CPU seconds per second in the steady window
    services: str
    startup_s: float
    load_before: str
    load_after: str
    final: list[dict[str, float]]
    per_worker: str = ""
    #: CPU of each of ``Bench.service_cpu``'s entries in the steady window: seconds per
    #: second (cores), the numbers behind ``services``.
    service_shares: dict[str, float] = field(default_factory=dict)


@dataclass
class Latency:
    rate: float
    achieved: str
    sent: int
    alerts: int
    duplicates: int
    field_ms: list[float]
    kafka_ts_ms: list[float]
    received_ms: list[float]
    unmatched: int
    mismatched: int
    load_before: str
    load_after: str
    warm: str
    batch_mean: float
    processing_mean_ms: float
    processing_p99_ms: float
    flush_mean_ms: float
    flush_p99_ms: float
    #: Event-loop lag (a 50 ms timer firing late): p99 and max bucket bounds, ms.
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    #: Garbage collections of generation 2 timed by the worker: total seconds.
    gc_full_s: float
    #: Per batch, oldest transaction: Kafka timestamp -> handed to its agent, p50/p99 ms.
    fetch_delay_ms: tuple[float, float]
    #: Per batch, oldest transaction: handed to its agent -> processed, p50/p99 ms.
    queue_delay_ms: tuple[float, float]
    #: Releases of held transactions: the longest held of each, p50/p99 ms, and how many.
    held_ms: tuple[float, float]
    releases: int
    flushes: int
    timeline: str
    #: The pass-through agent under the same paced replay: copy's timestamp - sent header.
    passthrough_ms: list[float]
    redis_pings: str
    worker_cpu_share: float  # worker process CPU s per s during the paced replay
    #: The same per transaction sent: compare with the throughput phase's CPU us/tx (a
    #: worker at a live pace takes smaller batches, and its caches go cold between them).
    worker_cpu_us: float
    gc_gen2: int  # full garbage collections of the worker meanwhile
    #: Worker CPU s per s while idle, caught up, before the paced replay: what it costs
    #: with nothing to do (fetch requests, timers, flushes of nothing).
    idle_cpu_share: float
    #: Every transaction: received by a plain consumer - sent header (Kafka's own latency).
    transport_ms: list[float]
    #: Every transaction: Kafka timestamp of its forward - sent header (the scorer's latency).
    forward_ms: list[float]
    profile: str | None = None


@dataclass
class Bench:
    args: argparse.Namespace
    base: Settings
    run: str
    tmp: Path
    started: float = field(default_factory=time.monotonic)
    procs: list[Proc] = field(default_factory=list)
    services: dict[str, int | None] = field(default_factory=dict)
    dataset: Path | None = None
    transactions: int = 0
    model_line: str = ""
    latency_rate_why: str = ""
    code_at_start: str = ""
    #: The latency phase's data: pre-loaded before this day, paced from it.
    split_date: str = ""
    warm_tx: int = 0
    #: --latency-live: the warm-up days moved to end now (`live_warm_up`).
    live_warm_up: Path | None = None

    @property
    def prefix(self) -> str:
        return f"fsbench-{self.run}-"

    @property
    def namespace(self) -> str:
        return f"fsbench:{self.run}"

    @property
    def logs(self) -> Path:
        return self.tmp / "logs"

    @property
    def registry(self) -> Path:
        return self.tmp / "registry"

    def settings(self, variant: str, data: str, partitions: int, **update: Any) -> Settings:
        """Settings of one worker variant: its own app id, outputs and Redis namespace,
        reading the input topics of the pre-loaded ``data``."""
        values: dict[str, Any] = {
            "app_id": f"{self.prefix}{variant}",
            "topic_prefix": self.prefix,
            "topic_transactions": f"{data}-transactions",
            "topic_fraud_reports": f"{data}-fraud-reports",
            "topic_alerts": f"{variant}-alerts",
            "topic_scores": f"{variant}-scores",
            "topic_dlq": f"{variant}-dlq",
            "topic_model_control": f"{variant}-model-control",
            "topic_transactions_by_terminal": f"{variant}-transactions-by-terminal",
            "topic_partitions": partitions,
            "redis_key_prefix": f"{self.namespace}:{variant}",
            "model_registry_dir": self.registry,
            "web_port": free_port(),
            "log_level": "info",  # rebalances and assignments in the worker logs
        }
        values.update(update)
        return self.base.model_copy(update=values)

    def service_cpu(self) -> dict[str, float | None]:
        return {name: process_cpu_s(pid) for name, pid in self.services.items()}

    async def cli(self, settings: Settings, *args: str, timeout_s: float = 900) -> str:
        """Run a fraudstream command in a child process; return its output."""
        proc = Proc(
            f"cli-{args[0]}-{len(self.procs)}",
            [sys.executable, "-m", "streams", "--log-level", "warn", *args],
            {**os.environ, **settings.as_env()},
            self.logs,
        )
        self.procs.append(proc)
        await proc.start()
        code = await proc.wait(timeout_s)
        if code != 0:
            raise RuntimeError(f"fraudstream {' '.join(args)} failed ({code})\n{proc.log_tail()}")
        return proc.log_text().strip()

    def pipeline_worker(self, name: str, settings: Settings) -> Worker:
        worker = Worker(name, [sys.executable, "-m", "streams", "worker"], settings, self.logs, {})
        self.procs.append(worker)
        return worker

    def passthrough_worker(self, name: str, settings: Settings, output: str) -> Worker:
        worker = Worker(
            name,
            [sys.executable, str(PASSTHROUGH)],
            settings,
            self.logs,
            {"BENCH_OUTPUT_TOPIC": output},
        )
        self.procs.append(worker)
        return worker


# -- setup ---------------------------------------------------------------------------


def simulation_config(transactions: int, days: int) -> SimulationConfig:
    customers = max(50, round(transactions / (days * TX_PER_CUSTOMER_DAY)))
    return SimulationConfig(
        customers=customers,
        terminals=2 * customers,
        days=days,
        # The handbook's 2 and 3 a day for 5,000 customers, scaled (demo: 1 and 1 for 1,000).
        compromised_terminals_per_day=max(1, round(2 * customers / 5000)),
        compromised_customers_per_day=max(1, round(3 * customers / 5000)),
    )


def live_warm_up(frame: pl.DataFrame, split_date: str) -> pl.DataFrame:
    """The warm-up days of a live latency run, moved in time to end now.

    Live transactions are stamped with the present: warmed up on the dataset's own days
    (2018), every card's and terminal's first live transaction would jump years past its
    history, find its windows empty and cost less than a card network's would. Moved, the
    live traffic continues the history it was warmed up on. A fraud report due after now
    is not known yet: its row keeps its label without a report time (no report is sent).
    """
    now = datetime.now(UTC)
    shift = now - datetime.fromisoformat(split_date).replace(tzinfo=UTC)
    reported = pl.col("reported_at") + shift
    return frame.filter(
        pl.col("tx_time") < pl.lit(split_date).str.to_datetime(time_zone="UTC")
    ).with_columns(
        pl.col("tx_time") + shift,
        pl.when(reported <= pl.lit(now)).then(reported).otherwise(None).alias("reported_at"),
    )


async def setup(bench: Bench) -> None:
    args = bench.args
    began = time.monotonic()
    config = simulation_config(args.transactions, args.days)
    frame = simulate(config)
    bench.dataset = bench.tmp / "transactions.parquet"
    write_dataset(frame, bench.dataset)
    bench.transactions = frame.height
    bench.split_date = (config.start_date + timedelta(days=args.days // 2)).isoformat()
    if args.latency_live and not args.skip_latency:
        bench.live_warm_up = bench.tmp / "warm-up-live.parquet"
        write_dataset(live_warm_up(frame, bench.split_date), bench.live_warm_up)
    frauds = int(frame["is_fraud"].sum())
    print(
        f"setup: simulated {frame.height:,} transactions ({frauds:,} frauds) of "
        f"{config.customers:,} customers, {config.terminals:,} terminals, {config.days} days "
        f"in {time.monotonic() - began:.1f} s"
    )
    began = time.monotonic()
    settings = bench.settings("train", "d", args.partitions)
    trained = await bench.cli(
        settings,
        "train",
        "--data",
        str(bench.dataset),
        "--model",
        "lr",
        "--alert-budget",
        str(args.alert_budget),
    )
    lines = trained.splitlines()
    version = lines[-1].split()[1]  # "registered VERSION in DIRECTORY"
    await bench.cli(settings, "model", "promote", "--no-publish", version)
    threshold = next((line for line in lines if line.startswith("threshold ")), "threshold ?")
    bench.model_line = f"{version}: {' '.join(threshold.split())}"
    print(
        f"setup: trained, registered and promoted {bench.model_line} "
        f"in {time.monotonic() - began:.1f} s"
    )


async def preload(
    bench: Bench, data: str, partitions: int, *options: str, path: Path | None = None
) -> int:
    """Replay the dataset (all of it, or as ``options`` say; or the file ``path``), as fast
    as it goes, into the input topics of ``data``; return the number of transactions sent."""
    path = path or bench.dataset
    assert path is not None
    settings = bench.settings(f"load-{data}", data, partitions)
    began = time.monotonic()
    out = await bench.cli(settings, "replay", *options, str(path))
    summary = next((line for line in out.splitlines() if line.startswith("replayed ")), out)
    summary = summary.replace(str(path), "the dataset")
    print(
        f"setup: pre-loaded {data} ({partitions} partitions; {time.monotonic() - began:.1f} s "
        f"with start-up): {summary}; load {load()}"
    )
    found = re.search(r": (\d+) transactions", summary)
    return int(found.group(1)) if found else 0


# -- throughput ----------------------------------------------------------------------


async def measure(
    bench: Bench,
    label: str,
    workers: list[Worker],
    expected: int,
    *,
    all_active: bool = False,
    terminal: bool = True,
    on_progress: Callable[[float], Awaitable[None]] | None = None,
) -> Throughput:
    """Start the workers, poll their /metrics until ``expected`` transactions are scored
    (and, with ``terminal``, applied by the terminal agent too)."""
    args = bench.args
    load_before = load()
    await asyncio.gather(*(w.start() for w in workers))
    spawned = min(w.spawned_at for w in workers)
    samples: list[Sample] = []
    last: list[dict[str, float]] = [{} for _ in workers]
    progress_at = time.monotonic()
    progress = -1.0
    scored_at: Sample | None = None  # the sample where scoring was done
    load_after = ""
    while True:
        for worker in workers:
            if not worker.alive:
                raise RuntimeError(f"{worker.name} exited\n{worker.log_tail()}")
        scraped = await asyncio.gather(*(asyncio.to_thread(w.scrape) for w in workers))
        now = time.monotonic()
        for i, metrics in enumerate(scraped):
            if metrics is not None:
                last[i] = metrics
        dlq = sum(m.get(DLQ, 0.0) for m in last)
        sample = Sample(
            now,
            tuple(m.get(TRANSACTIONS, 0.0) for m in last),
            sum(m.get("fraudstream_terminal_transactions_total", 0.0) for m in last) + dlq,
            tuple(w.cpu_s() for w in workers),
            bench.service_cpu(),
        )
        samples.append(sample)
        if sample.total + sample.terminal != progress:
            progress, progress_at = sample.total + sample.terminal, now
        idle_s = now - progress_at
        if scored_at is None and (
            sample.total >= expected or (sample.total + dlq >= expected and idle_s > 3)
        ):
            # Dead letters count as done (the scorer's and the terminal agent's are one
            # counter: the scorer had none in our runs, the terminal agent may have some).
            scored_at = sample
            load_after = load()
        if scored_at is not None and (not terminal or sample.terminal >= expected or idle_s > 5):
            break
        if scored_at is None and idle_s > args.stall_timeout:
            raise RuntimeError(
                f"{label}: no progress for {args.stall_timeout:.0f} s at {sample.total:,.0f} "
                f"of {expected:,} transactions\n" + "\n".join(w.log_tail() for w in workers)
            )
        if on_progress is not None:
            await on_progress(sample.total)
        await asyncio.sleep(args.poll)

    assert scored_at is not None
    first = next(s for s in samples if s.total > 0)
    lo_i = next(
        i
        for i, s in enumerate(samples)
        if s.total >= 0.1 * expected and (not all_active or all(c > 0 for c in s.counts))
    )
    hi_i = next(i for i, s in enumerate(samples) if s.total >= 0.9 * expected)
    if hi_i <= lo_i:  # too fast for the poll interval, or a late second worker
        lo_i = max(0, min(lo_i, hi_i - 1))
        hi_i = samples.index(scored_at)
    lo, hi = samples[lo_i], samples[hi_i]
    steady_events = hi.total - lo.total
    cpu = 0.0
    for before, after in zip(lo.cpu, hi.cpu, strict=True):
        cpu += (after or 0.0) - (before or 0.0)
    window_s = hi.at - lo.at
    service_shares = {
        name: ((hi.services[name] or 0.0) - (before or 0.0)) / window_s
        for name, before in lo.services.items()
    }
    services = ", ".join(f"{name} {share:.0%}" for name, share in service_shares.items())
    per_worker = ""
    if len(workers) > 1:
        shares = [
            f"{w.name} {(h - lo_c) / window_s:,.0f}/s"
            for w, h, lo_c in zip(workers, hi.counts, lo.counts, strict=True)
        ]
        per_worker = ", ".join(shares)
    all_agents: float | None = None
    end = samples[-1]
    if not terminal:  # one agent: done when scoring is
        all_agents = (scored_at.total - first.total) / max(scored_at.at - first.at, 1e-9)
    elif end.terminal >= expected:
        done_at = next(s for s in samples if s.terminal >= expected)
        all_agents = (expected - first.total) / max(done_at.at - first.at, 1e-9)
    return Throughput(
        label=label,
        workers=len(workers),
        partitions=workers[0].settings.topic_partitions,
        expected=expected,
        steady_rate=steady_events / window_s,
        overall_rate=(scored_at.total - first.total) / max(scored_at.at - first.at, 1e-9),
        all_agents_rate=all_agents,
        terminal_when_scored=scored_at.terminal,
        window=f"{lo.total / expected:.0%}-{hi.total / expected:.0%} in {window_s:.1f} s",
        cpu_us=cpu / steady_events * 1e6 if steady_events else math.nan,
        cpu_share=cpu / window_s,
        services=services,
        startup_s=first.at - spawned,
        load_before=load_before,
        load_after=load_after,
        final=last,
        per_worker=per_worker,
        service_shares=service_shares,
    )


def alerts(t: Throughput) -> str:
    scored = sum(m.get(TRANSACTIONS, 0.0) for m in t.final)
    sent = sum(m.get("fraudstream_alerts_total", 0.0) for m in t.final)
    return f"{sent / scored:.1%}" if scored and sent else "-"


def describe(t: Throughput) -> str:
    final = t.final
    alerts = sum(m.get("fraudstream_alerts_total", 0.0) for m in final)
    dlq = sum(m.get(DLQ, 0.0) for m in final)
    batches = sum(m.get("fraudstream_batch_size_count", 0.0) for m in final)
    batch_sum = sum(m.get("fraudstream_batch_size_sum", 0.0) for m in final)
    proc_sum = sum(m.get("fraudstream_processing_latency_seconds_sum", 0.0) for m in final)
    proc_count = sum(m.get("fraudstream_processing_latency_seconds_count", 0.0) for m in final)
    inexact = sum(m.get("fraudstream_terminal_reads_inexact_total", 0.0) for m in final)
    problems: Counter[str] = Counter()
    for m in final:
        for series, value in m.items():
            found = re.match(rf'{DLQ}{{problem="([^"]+)"}}', series)
            if found and value:
                problems[found.group(1)] += int(value)
    why = f" ({', '.join(f'{k} {v:,}' for k, v in problems.most_common())})" if problems else ""
    extra = ""
    if batches:
        extra = (
            f"; {alerts:,.0f} alerts, {dlq:,.0f} dead letters{why}, {inexact:,.0f} inexact "
            f"terminal reads; mean batch "
            f"{batch_sum / batches:.0f} tx, {proc_sum / max(proc_count, 1) * 1000:.1f} ms per "
            f"batch; terminal agent at {t.terminal_when_scored:,.0f} tx (dead letters "
            f"included) when the scorer was done, "
            + (
                f"all done at {t.all_agents_rate:,.0f} tx/s first->last"
                if t.all_agents_rate
                else "NOT DONE 5 s later"
            )
        )
    return (
        f"    {t.label}: steady {t.steady_rate:,.0f} tx/s ({t.window}), first->last "
        f"{t.overall_rate:,.0f} tx/s; worker CPU {t.cpu_us:.0f} us/tx, {t.cpu_share:.0%} of a "
        f"core; start-up "
        f"{t.startup_s:.1f} s; load {t.load_before} -> {t.load_after}\n"
        f"      CPU of the services in the steady window (share of a core): {t.services}{extra}"
        + (f"\n      per worker: {t.per_worker}" if t.per_worker else "")
    )


async def stop_all(workers: Sequence[Proc]) -> None:
    await asyncio.gather(*(w.stop() for w in workers))


async def run_pipeline(
    bench: Bench, label: str, variant: str, data: str, partitions: int, **update: Any
) -> Throughput:
    worker = bench.pipeline_worker(variant, bench.settings(variant, data, partitions, **update))
    try:
        result = await measure(bench, label, [worker], bench.transactions)
    finally:
        await stop_all([worker])
    print(describe(result))
    return result


async def run_passthrough(bench: Bench, data: str, partitions: int) -> Throughput:
    settings = bench.settings("passthrough", data, partitions)
    output = f"{bench.prefix}passthrough-out"
    await ensure_topics(settings, [TopicSpec(output, partitions)])
    worker = bench.passthrough_worker("passthrough", settings, output)
    try:
        result = await measure(
            bench, "pass-through agent", [worker], bench.transactions, terminal=False
        )
    finally:
        await stop_all([worker])
    print(describe(result))
    return result


async def run_two_workers(bench: Bench) -> Throughput:
    settings = bench.settings("p2w2", "d2", 2)
    workers = [
        bench.pipeline_worker("p2w2-a", settings),
        bench.pipeline_worker("p2w2-b", settings.model_copy(update={"web_port": free_port()})),
    ]
    try:
        result = await measure(
            bench, "pipeline, 2 workers", workers, bench.transactions, all_active=True
        )
    finally:
        await stop_all(workers)
    print(describe(result))
    return result


# -- latency -------------------------------------------------------------------------


class Collector:
    """Consumes a topic from its current end, noting when each message arrived.

    ``only`` reads those partitions alone: a sample, for a topic whose every message
    would cost this process (on the same cores as the worker) a visible share of a CPU.
    """

    def __init__(
        self, settings: Settings, topic: str, partitions: int, only: Sequence[int] = ()
    ) -> None:
        self.consumer = AIOKafkaConsumer(
            enable_auto_commit=False, group_id=None, **client_options(settings)
        )
        chosen = only or range(partitions)
        self.partitions = [TopicPartition(topic, p) for p in chosen]
        # value, Kafka timestamp, arrival (epoch ms), headers
        self.received: list[tuple[bytes, int, float, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        ends = await self.consumer.end_offsets(self.partitions)
        for tp in self.partitions:
            self.consumer.seek(tp, ends[tp])
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            batches = await self.consumer.getmany(timeout_ms=100)
            now_ms = time.time() * 1000
            for messages in batches.values():
                for message in messages:
                    self.received.append(
                        (message.value, message.timestamp, now_ms, message.headers)
                    )

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.consumer.stop()


class RedisProbe:
    """PINGs Redis every 10 ms from a thread: a blocked Redis (a slow fsync, a fork) shows
    as a slow PING, and so would every synchronous read the worker makes meanwhile."""

    def __init__(self, settings: Settings) -> None:
        password = settings.redis_password
        self.client = redis.Redis.from_url(
            settings.redis_url, password=password.get_secret_value() if password else None
        )
        self.pings: list[tuple[float, float]] = []  # (epoch ms, round trip ms)
        self._stop = False
        self._thread: asyncio.Future[None] | None = None

    def _run(self) -> None:
        while not self._stop:
            began = time.perf_counter()
            self.client.ping()
            self.pings.append((time.time() * 1000, (time.perf_counter() - began) * 1000))
            time.sleep(0.01)

    def start(self) -> None:
        self._thread = asyncio.get_running_loop().run_in_executor(None, self._run)

    async def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            await self._thread
        self.client.close()

    def describe(self, start_ms: float, slice_s: int = 5) -> str:
        if not self.pings:
            return "no pings"
        rtts = sorted(r for _, r in self.pings)
        slow = sum(1 for r in rtts if r > 100)
        slices: dict[int, float] = {}
        for at, rtt in self.pings:
            index = int((at - start_ms) / 1000 // slice_s)
            slices[index] = max(slices.get(index, 0.0), rtt)
        by_slice = "  ".join(
            f"{i * slice_s}-{(i + 1) * slice_s} s: {v:.0f}" for i, v in sorted(slices.items())
        )
        return (
            f"{len(rtts):,} PINGs: p50 {percentile(rtts, 50):.1f}  p99 {percentile(rtts, 99):.1f}"
            f"  max {rtts[-1]:.0f} ms, {slow} over 100 ms; max by {slice_s} s: {by_slice}"
        )


async def end_offsets(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **client_options(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_topic(settings: Settings, topic: str, starts: dict[int, int]) -> list[Any]:
    """The messages of a topic from the offsets ``starts`` (by partition) to its end."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **client_options(settings))
    await consumer.start()
    out: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in starts]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp.partition])
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > starts[tp.partition]}
        while pending:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, messages in batches.items():
                out += messages
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return out


def forward_rows(value: bytes) -> list[ForwardRow]:
    """The rows of a forward message (one per transaction; none if it does not decode)."""
    rows = decode_forwards(value)
    return [] if isinstance(rows, DecodeError) else rows


def tx_id(value: bytes) -> str:
    found = re.search(rb'"tx_id":"([^"]+)"', value)
    return found.group(1).decode() if found else str(orjson.loads(value)["tx_id"])


def paced_replay(bench: Bench, name: str, settings: Settings, rate: float, limit: int) -> Proc:
    """``fraudstream replay --rate`` of the second half of the dataset, not started yet.

    With ``--latency-live``, bench/live_sender.py instead: the same transactions, each
    stamped with the moment it is sent (the live path).
    """
    assert bench.dataset is not None
    if bench.args.latency_live:
        argv = [sys.executable, str(LIVE_SENDER)]
    else:
        argv = [sys.executable, "-m", "streams", "--log-level", "warn", "replay"]
    argv += ["--rate", f"{rate:.0f}", "--from", bench.split_date, "--limit", str(limit)]
    replay = Proc(
        name, [*argv, str(bench.dataset)], {**os.environ, **settings.as_env()}, bench.logs
    )
    bench.procs.append(replay)
    return replay


def replay_result(replay: Proc, code: int, limit: int) -> tuple[int, str]:
    """Transactions a finished replay sent, and its achieved rate in words."""
    if code != 0:
        raise RuntimeError(f"paced replay failed ({code})\n{replay.log_tail()}")
    output = replay.log_text()
    found = re.search(r": (\d+) transactions .* in ([\d.]+) s \(([\d,]+) events/s", output)
    sent_tx = int(found.group(1)) if found else limit
    return sent_tx, f"{found.group(3)} events/s for {found.group(2)} s" if found else "?"


async def run_passthrough_latency(bench: Bench, rate: float) -> list[float]:
    """The ceiling's latency: the pass-through agent under the same paced replay, on
    topics of its own; per transaction, its copy's Kafka timestamp minus the header."""
    args = bench.args
    partitions = args.partitions
    settings = bench.settings("latpt", "latpt", partitions)
    names = settings.topic_names
    output = f"{bench.prefix}latpt-out"
    # The product's topic configs: the replayed events are years old (retention).
    await ensure_topics(settings, [*product_topics(settings), TopicSpec(output, partitions)])
    worker = bench.passthrough_worker("latpt", settings, output)
    limit = max(1, round(rate * args.latency_seconds))
    await worker.start()
    try:
        deadline = time.monotonic() + 120
        while "Ready" not in worker.log_text() or worker.scrape() is None:
            if not worker.alive or time.monotonic() > deadline:
                raise RuntimeError(f"pass-through worker not ready\n{worker.log_tail()}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)
        replay = paced_replay(bench, "latpt-replay", settings, rate, limit)
        await replay.start()
        sent_tx, _ = replay_result(replay, await replay.wait(args.latency_seconds * 4 + 120), limit)
        deadline = time.monotonic() + 120
        while ((await asyncio.to_thread(worker.scrape)) or {}).get(TRANSACTIONS, 0.0) < sent_tx:
            if not worker.alive or time.monotonic() > deadline:
                raise RuntimeError(f"pass-through worker behind\n{worker.log_tail()}")
            await asyncio.sleep(0.25)
    finally:
        await stop_all([worker])
    starts = {p: 0 for p in range(partitions)}
    sent = {
        tx_id(m.value): at
        for m in await read_topic(settings, names["transactions"], starts)
        if (at := sent_at_ms(m.headers)) is not None
    }
    return sorted(
        float(m.timestamp - at)
        for m in await read_topic(settings, output, starts)
        if (at := sent.get(tx_id(m.value))) is not None
    )


async def catch_up(bench: Bench, worker: Worker, expected: int) -> dict[str, float]:
    """Wait until the worker has a model and has scored ``expected`` transactions, and
    its terminal agent has applied every one scored; return its metrics then."""
    stall_s = bench.args.stall_timeout
    last_total, last_change = -1.0, time.monotonic()
    while True:
        if not worker.alive:
            raise RuntimeError(f"{worker.name} exited\n{worker.log_tail()}")
        metrics = await asyncio.to_thread(worker.scrape) or {}
        scored = metrics.get(TRANSACTIONS, 0.0)
        total = scored + metrics.get(DLQ, 0.0)
        terminal = metrics.get("fraudstream_terminal_transactions_total", 0.0)
        if (
            metrics.get("fraudstream_model_info", 0.0) > 0
            and total >= expected
            and terminal + metrics.get(DLQ, 0.0) >= scored
        ):
            return metrics
        if total + terminal != last_total:
            last_total, last_change = total + terminal, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            raise TimeoutError(
                f"{worker.name}: stalled at {total:,.0f} of {expected:,} transactions "
                f"(terminal agent {terminal:,.0f})\n{worker.log_tail()}"
            )
        await asyncio.sleep(0.25)


async def run_latency(bench: Bench, rate: float) -> Latency:
    """A worker catches up on the warm-up data, idles, then takes a paced replay."""
    args = bench.args
    assert bench.dataset is not None
    partitions = args.partitions
    settings = bench.settings("lat", "lat", partitions)
    names = settings.topic_names
    worker = bench.pipeline_worker("lat", settings)
    limit = max(1, round(rate * args.latency_seconds))
    collector = Collector(settings, names["alerts"], partitions)
    # Kafka's own latency from one partition's transactions: all of them cost the bench
    # process a fifth of a core taken from the worker's machine.
    probe = Collector(settings, names["transactions"], partitions, only=[0])
    pings = RedisProbe(settings)
    collecting = False
    profile: str | None = None
    began = time.monotonic()
    await worker.start()
    try:
        await catch_up(bench, worker, bench.warm_tx)
        warm_s = time.monotonic() - began
        await asyncio.sleep(2 * settings.commit_interval_s + 1.0)  # flushed
        idle_from, idle_cpu = time.monotonic(), worker.cpu_s() or 0.0
        await asyncio.sleep(IDLE_S)
        idle_share = ((worker.cpu_s() or 0.0) - idle_cpu) / (time.monotonic() - idle_from)
        starts = await end_offsets(settings, names["transactions"], partitions)
        forward_starts = await end_offsets(settings, names["transactions_by_terminal"], partitions)
        before = await asyncio.to_thread(worker.scrape) or {}
        cpu_before, cpu_from = worker.cpu_s() or 0.0, time.monotonic()
        await collector.start()
        await probe.start()
        pings.start()
        collecting = True
        load_before = load()
        replay = paced_replay(bench, "lat-replay", settings, rate, limit)
        await replay.start()
        spy: Proc | None = None
        spy_out = bench.logs / "py-spy-latency.txt"  # raw stacks kept with the logs
        spy_s = max(1.0, min(args.profile_seconds, args.latency_seconds - 5))
        if args.profile_latency and PY_SPY.exists():
            await asyncio.sleep(3.0)
            assert worker.pid is not None
            spy = await start_py_spy(bench, worker.pid, spy_s, spy_out, mode=args.profile_latency)
        code = await replay.wait(args.latency_seconds * 4 + 120)
        cpu_used = (worker.cpu_s() or 0.0) - cpu_before
        cpu_share = cpu_used / (time.monotonic() - cpu_from)
        if spy is not None:
            await spy.wait(spy_s + 60)
            if spy_out.exists():
                profile = "latency worker, during the paced replay: " + summarise_profile(
                    spy_out, spy_s, args.top, mode=args.profile_latency
                )
            else:
                profile = f"py-spy: no profile\n{spy.log_tail()}"
        sent_tx, achieved = replay_result(replay, code, limit)
        after = await catch_up(bench, worker, bench.warm_tx + sent_tx)
        load_after = load()
        await asyncio.sleep(1.5)  # the last alerts reach the collector
    finally:
        if collecting:
            await collector.stop()
            await probe.stop()
            await pings.stop()
        await stop_all([worker])

    sent = {
        tx_id(m.value): at
        for m in await read_topic(settings, names["transactions"], starts)
        if (at := sent_at_ms(m.headers)) is not None
    }
    transport_ms = sorted(
        at_ms - at
        for _v, _t, at_ms, headers in probe.received
        if (at := sent_at_ms(headers)) is not None
    )
    forwards = await read_topic(settings, names["transactions_by_terminal"], forward_starts)
    forward_ms = sorted(
        float(m.timestamp - at)
        for m in forwards
        for row in forward_rows(m.value)
        if (at := sent.get(row.tx_id)) is not None
    )
    field_ms: list[float] = []
    kafka_ts_ms: list[float] = []
    by_sent: list[tuple[int, float]] = []
    received_ms: list[float] = []
    unmatched = mismatched = 0
    ids: Counter[str] = Counter()
    for value, timestamp, at_ms, _headers in collector.received:
        alert = orjson.loads(value)
        ids[alert["alert_id"]] += 1
        field_ms.append(float(alert["latency_ms"]))
        header = sent.get(alert["tx_id"])
        if header is None:
            unmatched += 1
            continue
        if alert["emitted_at"] - header != alert["latency_ms"]:
            mismatched += 1
        kafka_ts_ms.append(float(timestamp - header))
        received_ms.append(at_ms - header)
        by_sent.append((header, float(alert["latency_ms"])))
    first_sent = min(sent.values(), default=0)
    timeline = latency_timeline(by_sent, first_sent)
    d = delta(after, before)
    batches = d.get("fraudstream_batch_size_count", 0.0)
    flushes = d.get("fraudstream_redis_flush_seconds_count", 0.0)
    processing = "fraudstream_processing_latency_seconds"
    return Latency(
        rate=rate,
        achieved=achieved,
        sent=sent_tx,
        alerts=len(collector.received),
        duplicates=sum(n - 1 for n in ids.values()),
        field_ms=sorted(field_ms),
        kafka_ts_ms=sorted(kafka_ts_ms),
        received_ms=sorted(received_ms),
        unmatched=unmatched,
        mismatched=mismatched,
        load_before=load_before,
        load_after=load_after,
        warm=f"{bench.warm_tx:,} transactions before {bench.split_date}"
        + (", moved to end at the start of the run," if bench.live_warm_up else "")
        + f" caught up in {warm_s:.0f} s",
        batch_mean=d.get("fraudstream_batch_size_sum", 0.0) / max(batches, 1),
        processing_mean_ms=d.get(f"{processing}_sum", 0.0) / max(batches, 1) * 1000,
        processing_p99_ms=histogram_quantile(d, processing, 0.99) * 1000,
        flush_mean_ms=d.get("fraudstream_redis_flush_seconds_sum", 0.0) / max(flushes, 1) * 1000,
        flush_p99_ms=histogram_quantile(d, "fraudstream_redis_flush_seconds", 0.99) * 1000,
        loop_lag_p99_ms=histogram_quantile(d, "fraudstream_event_loop_lag_seconds", 0.99) * 1000,
        loop_lag_max_ms=histogram_quantile(d, "fraudstream_event_loop_lag_seconds", 1.0) * 1000,
        gc_full_s=d.get('fraudstream_gc_pause_seconds_sum{generation="2"}', 0.0),
        fetch_delay_ms=(
            histogram_quantile(d, "fraudstream_fetch_delay_seconds", 0.5) * 1000,
            histogram_quantile(d, "fraudstream_fetch_delay_seconds", 0.99) * 1000,
        ),
        queue_delay_ms=(
            histogram_quantile(d, "fraudstream_queue_delay_seconds", 0.5) * 1000,
            histogram_quantile(d, "fraudstream_queue_delay_seconds", 0.99) * 1000,
        ),
        held_ms=(
            histogram_quantile(d, WATERMARK_WAIT, 0.5) * 1000,
            histogram_quantile(d, WATERMARK_WAIT, 0.99) * 1000,
        ),
        releases=int(d.get(f"{WATERMARK_WAIT}_count", 0.0)),
        flushes=int(flushes),
        timeline=timeline,
        redis_pings=pings.describe(first_sent),
        passthrough_ms=await run_passthrough_latency(bench, rate),
        worker_cpu_share=cpu_share,
        worker_cpu_us=cpu_used / max(sent_tx, 1) * 1e6,
        gc_gen2=int(d.get('python_gc_collections_total{generation="2"}', 0.0)),
        idle_cpu_share=idle_share,
        transport_ms=transport_ms,
        forward_ms=forward_ms,
        profile=profile,
    )


def latency_timeline(by_sent: list[tuple[int, float]], start_ms: int, slice_s: int = 5) -> str:
    """p50/max of the alerts' latency_ms by slice of the time their transaction was sent."""
    slices: dict[int, list[float]] = {}
    for sent_ms, latency_ms in by_sent:
        slices.setdefault(int((sent_ms - start_ms) / 1000 // slice_s), []).append(latency_ms)
    parts = []
    for index in sorted(slices):
        values = sorted(slices[index])
        parts.append(
            f"{index * slice_s}-{(index + 1) * slice_s} s: {percentile(values, 50):.0f}/"
            f"{values[-1]:.0f}"
        )
    return "  ".join(parts)


def quantiles(values: Sequence[float]) -> str:
    if not values:
        return "no values"
    return (
        f"p50 {percentile(values, 50):.0f}  p90 {percentile(values, 90):.0f}  "
        f"p99 {percentile(values, 99):.0f}  max {values[-1]:.0f} ms"
    )


def describe_latency(lat: Latency) -> str:
    checks = []
    if lat.unmatched:
        checks.append(f"{lat.unmatched} alerts without a sent header for their tx_id")
    if lat.mismatched:
        checks.append(f"{lat.mismatched} alerts whose latency_ms != emitted_at - header")
    if lat.duplicates:
        checks.append(f"{lat.duplicates} duplicate alert_ids")
    return (
        f"    latency at --rate {lat.rate:.0f}: replay achieved {lat.achieved}, "
        f"{lat.sent:,} transactions, {lat.alerts:,} alerts; load {lat.load_before} -> "
        f"{lat.load_after}\n"
        f"      alert latency_ms (emitted_at - sent header):   {quantiles(lat.field_ms)}\n"
        f"      alert Kafka timestamp - sent header:            {quantiles(lat.kafka_ts_ms)}\n"
        f"      alert received by a consumer - sent header:     {quantiles(lat.received_ms)}\n"
        f"      every transaction, forward's Kafka timestamp - sent header: "
        f"{quantiles(lat.forward_ms)} ({len(lat.forward_ms):,})\n"
        f"      partition 0's transactions, received by a plain consumer - sent header: "
        f"{quantiles(lat.transport_ms)} ({len(lat.transport_ms):,})\n"
        f"      worker during the paced replay: mean batch {lat.batch_mean:.1f} tx, processing "
        f"{lat.processing_mean_ms:.1f} ms per batch (p99 <= {lat.processing_p99_ms:.0f} ms, "
        f"bucket bound); {lat.flushes} Redis flushes, mean {lat.flush_mean_ms:.1f} ms "
        f"(p99 <= {lat.flush_p99_ms:.0f} ms); worker CPU {lat.worker_cpu_share:.0%} of a core "
        f"({lat.worker_cpu_us:.0f} us per transaction sent; {lat.idle_cpu_share:.0%} idle "
        f"before it), "
        f"{lat.gc_gen2} full (gen 2) garbage collections taking {lat.gc_full_s * 1000:.0f} ms "
        f"in all; event-loop lag p99 <= {lat.loop_lag_p99_ms:.0f} ms, max <= "
        f"{lat.loop_lag_max_ms:.0f} ms (bucket bounds)\n"
        f"      per batch, its oldest transaction (bucket bounds, p50/p99): Kafka timestamp -> "
        f"handed to its agent {lat.fetch_delay_ms[0]:.0f}/{lat.fetch_delay_ms[1]:.0f} ms, "
        f"then -> processed {lat.queue_delay_ms[0]:.0f}/{lat.queue_delay_ms[1]:.0f} ms; "
        f"{lat.releases:,} releases of transactions held on terminal watermarks, the "
        f"longest held of each p50/p99 {lat.held_ms[0]:.0f}/{lat.held_ms[1]:.0f} ms\n"
        f"      latency_ms p50/max by 5 s of send time: {lat.timeline}\n"
        f"      Redis meanwhile, {lat.redis_pings}\n"
        f"      the pass-through agent under the same paced replay, copy's Kafka timestamp - "
        f"sent header: {quantiles(lat.passthrough_ms)} ({len(lat.passthrough_ms):,})\n"
        f"      warm-up: {lat.warm}; alerts: {lat.alerts / max(lat.sent, 1):.1%} of the "
        f"transactions; checks: {'; '.join(checks) or 'ok'}"
    )


# -- profile -------------------------------------------------------------------------


async def run_profile(bench: Bench, data: str, partitions: int) -> str:
    """A pipeline worker with py-spy attached from 10 % of the transactions."""
    args = bench.args
    worker = bench.pipeline_worker("prof", bench.settings("prof", data, partitions))
    out = bench.logs / "py-spy-throughput.txt"  # raw stacks kept with the logs
    spy: Proc | None = None

    async def attach(total: float) -> None:
        nonlocal spy
        if spy is None and total >= 0.1 * bench.transactions:
            assert worker.pid is not None
            spy = await start_py_spy(bench, worker.pid, args.profile_seconds, out, mode="busy")

    try:
        result = await measure(
            bench, "pipeline under py-spy", [worker], bench.transactions, on_progress=attach
        )
        if spy is not None:
            await spy.wait(args.profile_seconds + 60)
    finally:
        await stop_all([worker])
    print(describe(result) + "   (profiled: not a benchmark)")
    if spy is None or not out.exists():
        return f"py-spy: no profile ({spy.log_tail() if spy else 'not started'})"
    return summarise_profile(out, args.profile_seconds, args.top)


async def start_py_spy(bench: Bench, pid: int, seconds: float, out: Path, *, mode: str) -> Proc:
    """py-spy record on a process, raw stacks with thread names, line numbers dropped.

    ``mode``: ``busy`` samples the threads that are not idle; ``idle`` every thread;
    ``gil`` only the thread holding the GIL, so the samples add up to the GIL's busy
    time: a thread waiting for the GIL looks busy to ``busy``, not to ``gil``.
    """
    argv = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(round(seconds))]
    argv += ["--rate", "100", "--format", "raw", "--threads", "--nolineno", "--output", str(out)]
    if mode == "idle":
        argv.append("--idle")
    elif mode == "gil":
        argv.append("--gil")
    spy = Proc(f"py-spy-{out.stem}", argv, dict(os.environ), bench.logs)
    bench.procs.append(spy)
    await spy.start()
    return spy


def summarise_profile(path: Path, seconds: float, top: int, *, mode: str = "busy") -> str:
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), "thread ?")
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        threads[thread] += count
        own[frames[-1]] += count
        for frame in set(frames):
            cumulative[frame] += count
    if not total:
        return "py-spy: empty profile"
    possible = seconds * 100  # samples of one always-busy thread
    what = {
        "idle": "all threads, idle ones included",
        "gil": "the thread holding the GIL",
    }.get(mode, "active (non-idle) threads")
    lines = [
        f"py-spy, {seconds:.0f} s at 100 Hz, {total} samples of {what}; "
        "% = share of the samples of one thread busy the whole time"
    ]
    lines.append(
        "  threads: " + ", ".join(f"{t} {n / possible:.0%}" for t, n in threads.most_common(4))
    )
    # The trunk (interpreter, CLI, event loop) is on nearly every stack: not informative.
    busiest = threads.most_common(1)[0][1]
    branches = Counter({f: n for f, n in cumulative.items() if n < 0.9 * busiest})
    ours = Counter(
        {f: n for f, n in branches.items() if re.search(r"\((streams|features|models)/", f)}
    )
    for title, counter in (
        ("own time", own),
        ("cumulative (without the frames on >= 90 % of the stacks)", branches),
        ("cumulative, fraudstream code only", ours),
    ):
        lines.append(f"  top {top} by {title}:")
        lines += [f"    {n / possible:6.1%}  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(lines)


# -- cleanup -------------------------------------------------------------------------


async def cleanup(bench: Bench) -> None:
    """Stop what runs; delete the run's topics, groups, Redis keys, worker data, files."""
    for proc in bench.procs:
        proc.kill()
        if proc.process is not None:
            with contextlib.suppress(ProcessLookupError):
                await proc.process.wait()
    if bench.args.keep:
        print(
            f"cleanup: --keep: topics {bench.prefix}*, Redis keys {bench.namespace}:*, "
            f"files in {bench.tmp} kept"
        )
        return
    settings = bench.base

    await delete_run_data(settings, topic_prefix=bench.prefix, key_pattern=f"{bench.namespace}:*")
    for path in (settings.local_dir / "worker-data").glob(f"{bench.prefix}*"):
        shutil.rmtree(path, ignore_errors=True)
    for path in bench.tmp.iterdir():
        if path.name != "logs":
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
    print(f"cleanup: dataset and registry deleted; worker logs kept in {bench.logs}")


# -- main ----------------------------------------------------------------------------


def settings_used(bench: Bench) -> str:
    s = bench.base
    conf = create_app(s, web_enabled=False).conf
    return (
        f"worker settings: batch_max={s.batch_max}, "
        f"commit_interval_s={s.commit_interval_s}, emit_scores={s.emit_scores} (on where "
        f"said), alert_reasons={s.alert_reasons}, table_store={s.table_store}, log_level=info; "
        f"Faust: producer_linger={conf.producer_linger}s, producer_acks={conf.producer_acks}, "
        f"stream_buffer_maxsize={conf.stream_buffer_maxsize}, "
        f"broker_max_poll_records={conf.broker_max_poll_records}"
    )


def summary(
    bench: Bench,
    results: dict[str, Throughput],
    latency: Latency | None,
    profile: str | None,
    load_start: str,
) -> str:
    args = bench.args
    took = time.monotonic() - bench.started
    ceiling = results.get("passthrough")
    rows = [
        ("passthrough", "pass-through agent (ceiling)"),
        ("pipeline", "pipeline (defaults: no score records)"),
        ("scores", "pipeline, score records on"),
        ("p2w1", "pipeline, 2 partitions"),
        ("p2w2", "pipeline, 2 partitions, 2 workers"),
    ]
    out = [
        "",
        f"=== bench_pipeline summary: run {bench.run}, {os.cpu_count()} CPUs, "
        f"took {took / 60:.1f} min ===",
        f"code: {bench.code_at_start}"
        + (f"; at the end: {code}" if (code := code_state()) != bench.code_at_start else ""),
        f"data: {bench.transactions:,} transactions ({args.transactions:,} asked, "
        f"{args.days} days), pre-loaded before each worker started; model {bench.model_line}",
        settings_used(bench),
        "",
        f"{'':<36}{'':>8}{'':>6}{'--- transactions/s ---':>36}{'-- % ceiling --':>18}",
        f"{'phase':<36}{'workers':>8}{'parts':>6}{'steady':>12}{'1st->last':>12}"
        f"{'all agents':>12}{'steady':>9}{'all':>9}{'CPU us/tx':>10}{'CPU %':>7}{'alerts':>8}"
        "   load 1/5/15 min before -> after",
    ]
    for key, title in rows:
        t = results.get(key)
        if t is None:
            continue
        share = f"{t.steady_rate / ceiling.steady_rate:.0%}" if ceiling else "-"
        all_agents = f"{t.all_agents_rate:,.0f}" if t.all_agents_rate else "not done"
        all_share = (
            f"{t.all_agents_rate / ceiling.all_agents_rate:.0%}"
            if ceiling and ceiling.all_agents_rate and t.all_agents_rate
            else "-"
        )
        out.append(
            f"{title:<36}{t.workers:>8}{t.partitions:>6}{t.steady_rate:>12,.0f}"
            f"{t.overall_rate:>12,.0f}{all_agents:>12}{share:>9}{all_share:>9}"
            f"{t.cpu_us:>10.0f}{t.cpu_share:>7.0%}{alerts(t):>8}   "
            f"{t.load_before} -> {t.load_after}"
        )
    out.append(
        "  steady: transactions scored between the /metrics samples at 10 % and 90 % of them;"
        "\n  1st->last: from the first transaction scored to the last;"
        "\n  all agents: from the first scored until the terminal agent has also applied the "
        "last forward (the whole pipeline done; pass-through: its 1st->last);"
        "\n  % ceiling: the rate over the pass-through agent's rate of the same kind;"
        "\n  CPU: of the worker process(es) in the steady window, per transaction and as a "
        "share of one core; alerts: share of the transactions alerted"
    )
    if latency is not None:
        out += [
            "",
            f"latency at {latency.rate:,.0f} tx/s ({bench.latency_rate_why}; replay "
            f"achieved {latency.achieved}), {latency.sent:,} transactions, "
            f"{latency.alerts:,} alerts; load {latency.load_before} -> {latency.load_after}",
            f"  alert latency_ms (emitted_at - sent header)    {quantiles(latency.field_ms)}",
            f"  alert Kafka timestamp - sent header            {quantiles(latency.kafka_ts_ms)}",
            f"  alert received by a consumer - sent header     {quantiles(latency.received_ms)}",
            f"  every tx, its forward's Kafka ts - sent header {quantiles(latency.forward_ms)}",
            f"  partition 0's tx, a plain consumer's - sent    {quantiles(latency.transport_ms)}"
            " (Kafka's own share)",
            f"  every tx, pass-through agent's copy - sent     {quantiles(latency.passthrough_ms)}"
            " (the ceiling's latency, own run)",
            f"  Redis PING from this process meanwhile: {latency.redis_pings}",
            f"  worker: mean batch {latency.batch_mean:.1f} tx, processing "
            f"{latency.processing_mean_ms:.1f} ms per batch (p99 <= "
            f"{latency.processing_p99_ms:.0f} ms); Redis flushes mean "
            f"{latency.flush_mean_ms:.1f} ms (p99 <= {latency.flush_p99_ms:.0f} ms); "
            f"CPU {latency.worker_cpu_share:.0%} of a core, {latency.worker_cpu_us:.0f} us/tx "
            f"({latency.idle_cpu_share:.0%} idle); "
            f"{latency.gc_gen2} gen-2 GCs",
            f"  latency_ms p50/max by 5 s of send time: {latency.timeline}",
            f"  {latency.alerts / max(latency.sent, 1):.1%} of the transactions alerted; "
            f"warm-up: {latency.warm}",
        ]
    out.append("")
    pipeline = results.get("pipeline")
    if pipeline is not None and ceiling is not None:
        ratio = pipeline.steady_rate / ceiling.steady_rate
        verdict = "met" if ratio >= PIPELINE_TARGET_SHARE else "MISSED"
        whole = ""
        if pipeline.all_agents_rate and ceiling.all_agents_rate:
            whole_ratio = pipeline.all_agents_rate / ceiling.all_agents_rate
            whole_verdict = "met" if whole_ratio >= PIPELINE_TARGET_SHARE else "MISSED"
            whole = f"; all agents done: {whole_ratio:.0%} -> {whole_verdict}"
        out.append(
            f"target: pipeline >= {PIPELINE_TARGET_SHARE:.0%} of the pass-through agent "
            f"(one worker, {pipeline.partitions} partitions): steady scoring {ratio:.0%} -> "
            f"{verdict}{whole}"
        )
        cpu_verdict = "met" if pipeline.cpu_us <= CPU_TARGET_US else "MISSED"
        out.append(
            f"target: worker CPU <= {CPU_TARGET_US:.0f} us per transaction in steady state: "
            f"{pipeline.cpu_us:.0f} us -> {cpu_verdict}"
        )
    if latency is not None and latency.field_ms:
        p99 = percentile(latency.field_ms, 99)
        verdict = "met" if p99 <= P99_TARGET_MS else "MISSED"
        out.append(
            f"target: event-to-alert p99 <= {P99_TARGET_MS:.0f} ms at half load: "
            f"{p99:.0f} ms -> {verdict}"
        )
        if len(latency.field_ms) < args.min_alerts:
            out.append(
                f"  WARNING: only {len(latency.field_ms)} alerts (< {args.min_alerts}): "
                "raise --alert-budget or --latency-seconds"
            )
    two, one = results.get("p2w2"), results.get("p2w1")
    if two is not None and one is not None:
        out.append(
            f"scaling: 2 workers on 2 partitions = {two.steady_rate / one.steady_rate:.2f}x one "
            f"worker on 2 partitions ({two.per_worker})"
        )
    out.append(f"load average: at start {load_start}, at the end {load()}")
    if latency is not None and latency.profile:
        out += ["", latency.profile]
    if profile:
        out += ["", profile]
    return "\n".join(out)


def interrupt(signum: int, task: asyncio.Task[None]) -> None:
    """Stop the run on SIGINT/SIGTERM, saying so (the finally clauses clean up)."""
    print(f"\n{signal.Signals(signum).name} received at {time.strftime('%H:%M:%S')}: stopping")
    task.cancel()


def stop_on_signals() -> None:
    """Cancel the running task on SIGINT/SIGTERM, via `interrupt` (cleanup still runs)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt, signum, task)


async def main_async(args: argparse.Namespace) -> None:
    base = Settings()
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    bench = Bench(args, base, run, tmp)
    bench.logs.mkdir()
    stop_on_signals()
    for service in local_services(base):
        bench.services[service.name] = service.process.pid()
    load_start = load()
    bench.code_at_start = code_state()
    print(f"run {run}; {bench.code_at_start}; {os.cpu_count()} CPUs; load {load_start}")
    print(f"logs in {bench.logs}")
    results: dict[str, Throughput] = {}
    latency: Latency | None = None
    profile: str | None = None
    partitions = args.partitions
    try:
        await setup(bench)
        if not args.skip_throughput:
            await preload(bench, "d6", partitions)
        if not args.skip_two_workers:
            await preload(bench, "d2", 2)
        if not args.skip_latency:
            if bench.live_warm_up is not None:
                bench.warm_tx = await preload(bench, "lat", partitions, path=bench.live_warm_up)
            else:
                bench.warm_tx = await preload(bench, "lat", partitions, "--to", bench.split_date)
        if not args.skip_throughput:
            print(f"\n1-2. throughput, one worker, {partitions} partitions, and the ceiling")
            results["pipeline"] = await run_pipeline(
                bench, "pipeline (defaults: no score records)", "p", "d6", partitions
            )
            results["passthrough"] = await run_passthrough(bench, "d6", partitions)
            results["scores"] = await run_pipeline(
                bench, "pipeline, score records on", "psc", "d6", partitions, emit_scores=True
            )
        if not args.skip_latency:
            one = results.get("pipeline")
            if args.latency_rate or one is None:
                rate, bench.latency_rate_why = args.latency_rate, "--latency-rate"
            elif one.all_agents_rate:
                rate = one.all_agents_rate / 2
                bench.latency_rate_why = "half the all-agents rate of one worker"
            else:
                rate = one.steady_rate / 2
                bench.latency_rate_why = "half the steady scoring rate of one worker"
            print(f"\n3. latency at {rate:,.0f} tx/s for {args.latency_seconds:.0f} s")
            latency = await run_latency(bench, rate)
            print(describe_latency(latency))
        if not args.skip_two_workers:
            print("\n4. two partitions: one worker, then two")
            results["p2w1"] = await run_pipeline(bench, "pipeline, 2 partitions", "p2w1", "d2", 2)
            results["p2w2"] = await run_two_workers(bench)
        one, ceiling = results.get("pipeline"), results.get("passthrough")
        share = one.steady_rate / ceiling.steady_rate if one and ceiling else 1.0
        slow = latency is not None and percentile(latency.field_ms, 99) > P99_TARGET_MS
        costly = one is not None and one.cpu_us > CPU_TARGET_US
        missed = share < PIPELINE_TARGET_SHARE or slow or costly
        if not args.skip_throughput and (
            args.profile == "yes" or (args.profile == "auto" and missed)
        ):
            if PY_SPY.exists():
                print(f"\n5. profile: py-spy for {args.profile_seconds:.0f} s")
                profile = await run_profile(bench, "d6", partitions)
            else:
                profile = f"py-spy: not installed at {PY_SPY}"
    finally:
        await cleanup(bench)
        print(summary(bench, results, latency, profile, load_start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--transactions", type=int, default=240_000, help="dataset size (approximate)"
    )
    parser.add_argument("--days", type=int, default=60, help="days of the simulated dataset")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of 1-3")
    parser.add_argument("--alert-budget", type=float, default=100.0, help="train's alerts/day")
    parser.add_argument("--latency-seconds", type=float, default=25.0)
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="tx/s of 3 (default: half the all-agents rate of 1)",
    )
    parser.add_argument("--min-alerts", type=int, default=200, help="warn below this many")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--latency-live",
        action="store_true",
        help="3 sends live transactions (stamped with the present, bench/live_sender.py) "
        "instead of a paced replay of the dataset's times",
    )
    parser.add_argument("--skip-two-workers", action="store_true")
    parser.add_argument("--keep", action="store_true", help="do not delete topics, keys, files")
    parser.add_argument(
        "--profile",
        choices=("auto", "yes", "no"),
        default="auto",
        help="py-spy run (auto: when a target is missed)",
    )
    parser.add_argument("--profile-seconds", type=float, default=15.0)
    parser.add_argument(
        "--profile-latency",
        nargs="?",
        const="idle",
        choices=("idle", "busy", "gil"),
        help="py-spy on the latency worker during the paced replay: idle threads "
        "included (idle, the default), only busy samples (busy: where its CPU goes) or "
        "only the thread holding the GIL (gil: what keeps the event loop from running)",
    )
    parser.add_argument(
        "--skip-throughput",
        action="store_true",
        help="skip 1-2 (then 3 needs --latency-rate)",
    )
    parser.add_argument("--top", type=int, default=15, help="functions listed by py-spy")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between /metrics")
    parser.add_argument(
        "--stall-timeout", type=float, default=120.0, help="give up after no progress this long"
    )
    args = parser.parse_args()
    if args.skip_throughput and not args.skip_latency and not args.latency_rate:
        parser.error("--skip-throughput needs --latency-rate (or --skip-latency)")
    try:
        asyncio.run(main_async(args))
    except asyncio.CancelledError:
        sys.exit("interrupted (cleaned up)")


if __name__ == "__main__":
    main()
