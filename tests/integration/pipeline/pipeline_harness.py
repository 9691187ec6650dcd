"""What the pipeline's integration tests share: a model, worker processes, topic readers.

Workers are real ``python -m streams worker`` processes on the real broker and Redis,
started with the test's settings as ``FRAUDSTREAM_*`` variables, as a user would run them.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

import numpy as np
import polars as pl
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.cluster import RedisCluster
from replays import replay as replay  # the pipeline tests' replays, ended with each test

from features import dataset
from features.offline import compute_features
from features.online import EntityState
from features.simulator import SimulationConfig, simulate, write_dataset
from features.spec import DEFAULT_FEATURES, Entity
from models.estimators import BASELINE_PARAMS, ModelKind, feature_matrix, fit, fraud_labels
from models.registry import ModelRegistry
from models.training import feature_baseline
from streams.contracts import DecodeError, decode_alert, decode_score
from streams.kafka import client_options, ensure_topics, product_topics
from streams.pipeline import TERMINAL_TABLE
from streams.pipeline.terminals import terminal_partition
from streams.records import alert_id
from streams.settings import Settings
from streams.tablestore.keys import entry_key, partition_prefix


@dataclass(frozen=True)
class Message:
    """One consumed Kafka message."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Scenario:
    """A simulated dataset on disk with what a test compares the workers with.

    Attributes:
        transactions: The dataset.
        path: Where it is written (parquet), for ``fraudstream replay``.
        offline: The offline engine's features of it.
        version: The model fitted on them, registered and promoted.
        settings: The test's settings, pointing at that registry.
    """

    transactions: pl.DataFrame
    path: Path
    offline: pl.DataFrame
    version: str
    settings: Settings


def scenario(
    settings: Settings,
    tmp_path: Path,
    data: SimulationConfig,
    *,
    alert_share: float,
    **overrides: Any,
) -> Scenario:
    """Simulate ``data``, write it, compute its offline features, promote a model fitted on
    them, and create the product's topics under settings with ``overrides``."""
    transactions = simulate(data)
    path = tmp_path / "transactions.parquet"
    write_dataset(transactions, path)
    offline = compute_features(transactions)
    version = register_model(tmp_path / "registry", offline, alert_share=alert_share)
    settings = settings.model_copy(
        update={"model_registry_dir": tmp_path / "registry", **overrides}
    )
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    return Scenario(transactions, path, offline, version, settings)


def register_model(
    registry_dir: Path, featurised: pl.DataFrame, *, alert_share: float, promote: bool = True
) -> str:
    """Fit a logistic regression on offline features; register it, and promote it in the
    registry unless ``promote`` is False (then promote it with `streams.promotion`).

    The threshold is the score quantile that alerts on ``alert_share`` of the rows, so
    tests see enough alerts whatever the dataset.
    """
    names = DEFAULT_FEATURES.names
    x = feature_matrix(featurised, names)
    kind = ModelKind.LOGISTIC_REGRESSION
    estimator = fit(kind, BASELINE_PARAMS[kind], x, fraud_labels(featurised), 0)
    scores = estimator.predict_proba(x)[:, 1]
    threshold = float(np.quantile(scores, 1 - alert_share))
    registry = ModelRegistry(registry_dir)
    metadata = registry.register(
        estimator,
        kind=kind,
        feature_names=names,
        threshold={"value": threshold, "objective": "share of test rows", "target": alert_share},
        metrics={},
        params=BASELINE_PARAMS[kind],
        training={"rows": featurised.height},
        feature_baseline=feature_baseline(x),
    )
    if promote:
        registry.promote(metadata.version, names)
    return metadata.version


class Workers:
    """``fraudstream worker`` processes of one test, with score records on.

    The tests read what the workers computed from the scores topic (every transaction's
    features and score), which is off by default.
    """

    def __init__(self, settings: Settings, logs: Path, free_port: Callable[[], int]) -> None:
        self.settings = settings.model_copy(update={"emit_scores": True})
        self.logs = logs
        self.free_port = free_port
        self.running: list[tuple[subprocess.Popen[bytes], int]] = []
        self.started = 0

    def start(self) -> tuple[subprocess.Popen[bytes], int]:
        """Start one worker; returns the process and its web port."""
        self.started += 1
        port = self.free_port()
        env = {
            **os.environ,
            **self.settings.as_env(),
            "FRAUDSTREAM_WEB_PORT": str(port),
            "FRAUDSTREAM_LOG_LEVEL": os.environ.get("PIPELINE_WORKER_LOG_LEVEL", "warn"),
        }
        with (self.logs / f"worker-{self.started}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running.append((process, port))
        return process, port

    def wait_ready(self, port: int, timeout_s: float = 90) -> None:
        """Wait until the worker with this web port serves its metrics."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process, p in self.running:
                if p == port and process.poll() is not None:
                    raise AssertionError(f"worker exited with {process.returncode}\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2):
                    return
            except (URLError, OSError):
                time.sleep(0.3)
        raise AssertionError(f"worker on port {port} never served /metrics\n{self.log()}")

    def metric(self, port: int, name: str) -> float:
        """One unlabelled sample of a worker's /metrics (0 when not served yet)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except (URLError, OSError):
            return 0.0
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return 0.0

    def wait_for_metric(self, port: int, name: str, at_least: float, timeout_s: float) -> None:
        """Wait until a worker's counter reaches a value."""
        deadline = time.monotonic() + timeout_s
        while self.metric(port, name) < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} < {at_least} after {timeout_s}s\n{self.log()}")
            time.sleep(0.2)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker: no flush, no commit, no goodbye to the group."""
        process.kill()
        process.wait()
        self.running = [(p, port) for p, port in self.running if p is not process]

    def stop_all(self) -> list[int]:
        """SIGTERM every worker; returns their exit codes."""
        codes = []
        for process, _ in self.running:
            process.send_signal(signal.SIGTERM)
        for process, _ in self.running:
            try:
                codes.append(process.wait(timeout=60))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(-9)
        self.running = []
        return codes

    def log(self) -> str:
        """Every worker log of this test (for failure messages), last 4 kB each."""
        parts = []
        for path in sorted(self.logs.glob("worker-*.log")):
            parts.append(f"--- {path.name}\n{path.read_bytes()[-4000:].decode(errors='replace')}")
        return "\n".join(parts)


def read_topic(
    settings: Settings,
    topic: str,
    *,
    until: Callable[[list[Message]], bool] | None = None,
    timeout_s: float = 30,
) -> list[Message]:
    """Read a topic from its start, without a consumer group, until ``until`` holds.

    Without ``until``: until every partition's end offset at the start is reached.

    Raises:
        AssertionError: ``until`` did not hold within the timeout.
    """
    return asyncio.run(_read_topic(settings, topic, until, timeout_s))


async def _read_topic(
    settings: Settings,
    topic: str,
    until: Callable[[list[Message]], bool] | None,
    timeout_s: float,
) -> list[Message]:
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **client_options(settings))
    await consumer.start()
    messages: list[Message] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        assert partitions, f"topic {topic} has no partitions"
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning()
        if until is None:
            ends = await consumer.end_offsets(assigned)

            async def caught_up() -> bool:
                return all([await consumer.position(tp) >= end for tp, end in ends.items()])

        deadline = time.monotonic() + timeout_s
        while not (await caught_up() if until is None else until(messages)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{topic}: condition not met; {len(messages)} messages read")
            batch = await consumer.getmany(timeout_ms=int(min(remaining, 1.0) * 1000))
            for records in batch.values():
                messages.extend(
                    Message(r.partition, r.offset, r.key, r.value, tuple(r.headers or ()))
                    for r in records
                )
    finally:
        await consumer.stop()
    return messages


def header(message: Message, name: str) -> bytes | None:
    """One header's value, or None."""
    return next((v for n, v in message.headers if n == name), None)


def by_tx(values: Iterator[tuple[str, dict[str, float]]]) -> dict[str, list[dict[str, float]]]:
    """Group decoded feature maps by transaction id (a replayed transaction appears twice)."""
    out: dict[str, list[dict[str, float]]] = {}
    for tx_id, features in values:
        out.setdefault(tx_id, []).append(features)
    return out


def scored_ids(messages: list[Message]) -> set[str]:
    """The transaction ids of the score records among ``messages``."""
    ids = set()
    for message in messages:
        record = decode_score(message.value)
        if not isinstance(record, DecodeError):
            ids.add(record.tx_id)
    return ids


def terminal_mismatches(
    settings: Settings, client: redis.Redis | RedisCluster, transactions: pl.DataFrame
) -> list[str]:
    """Terminals whose stored transaction times differ from the dataset's (in retention)."""
    partitions = settings.topic_partitions
    times = (
        transactions.select(dataset.TERMINAL_ID, t=pl.col(dataset.TX_TIME).dt.epoch("ms"))
        .group_by(dataset.TERMINAL_ID)
        .agg(pl.col("t").sort())
    )
    wrong = []
    for terminal, expected in times.iter_rows():
        partition = terminal_partition(terminal.encode(), partitions)
        prefix = partition_prefix(
            settings.redis_key_prefix, settings.app_id, TERMINAL_TABLE, partition
        )
        raw = client.get(entry_key(prefix, terminal.encode()))
        assert raw is None or isinstance(raw, bytes)
        state = EntityState() if raw is None else EntityState.from_bytes(raw)
        newest = expected[-1]
        kept = [t for t in expected if t > newest - DEFAULT_FEATURES.retention_ms(Entity.TERMINAL)]
        if state.event_times() != kept:
            wrong.append(terminal)
    return wrong


def check_outputs(settings: Settings, offline: pl.DataFrame, version: str) -> int:
    """Check what the workers produced after crashes: outputs at least once, state exact.

    Every transaction of ``offline`` has a score record; every score record holds the
    offline engine's features, all of them (customer state is exact however often a
    transaction ran, and the scorer reads terminal state only once final); every
    transaction that scored at or above the threshold has its alert, with the stable
    alert id, so the alerts are the offline engine's; nothing was dead-lettered.

    Returns:
        How many score records repeat a transaction already scored: the visible trace of
        a crash that made a worker process events again.
    """
    names = settings.topic_names
    scores = read_topic(settings, names["scores"])
    alerts = read_topic(settings, names["alerts"])
    assert read_topic(settings, names["dlq"]) == []
    exact = offline.rows_by_key(dataset.TX_ID, named=True, unique=True)
    exact_names = DEFAULT_FEATURES.names
    above: set[str] = set()
    threshold = None
    replayed = 0
    seen: set[str] = set()
    for message in scores:
        record = decode_score(message.value)
        assert not isinstance(record, DecodeError)
        replayed += record.tx_id in seen
        seen.add(record.tx_id)
        threshold = record.threshold
        for name in exact_names:
            assert math.isclose(
                record.features[name], float(exact[record.tx_id][name]), abs_tol=1e-9
            ), (record.tx_id, name)
        if record.score >= record.threshold:
            above.add(record.tx_id)
    assert seen == set(offline[dataset.TX_ID].to_list())
    assert threshold is not None
    alerted: dict[str, str] = {}
    for message in alerts:
        alert = decode_alert(message.value)
        assert not isinstance(alert, DecodeError)
        assert alert.alert_id == alert_id(alert.tx_id, version)
        alerted[alert.tx_id] = alert.alert_id
    assert set(alerted) == above, (len(alerted), len(above))
    assert len(above) > 50
    return replayed


def wait_until_applied(
    settings: Settings, client: redis.Redis | RedisCluster, transactions: pl.DataFrame
) -> None:
    """Wait until every transaction has a score record and every terminal state in Redis
    holds exactly its transactions (the terminal agents run behind the scorers)."""
    everyone = set(transactions[dataset.TX_ID].to_list())

    def all_scored(messages: list[Message]) -> bool:
        return len(messages) >= len(everyone) and len(scored_ids(messages)) == len(everyone)

    read_topic(settings, settings.topic_names["scores"], until=all_scored, timeout_s=120)
    deadline = time.monotonic() + 60
    while terminal_mismatches(settings, client, transactions):
        assert time.monotonic() < deadline, "terminal states never caught up"
        time.sleep(1)


#: The worker's pages the outage tests ask.
PAGES = ("/health", "/ready", "/metrics")


@dataclass(frozen=True)
class Answer:
    """One page's answer: when it was asked (monotonic), its status, time and body."""

    at: float
    path: str
    status: int | None
    seconds: float
    body: str


def ask(port: int, path: str) -> Answer:
    """GET a worker's page; a failed connection is an answer with status None."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            status, body = response.status, response.read().decode()
    except HTTPError as error:
        status, body = error.code, error.read().decode()
        error.close()
    except (URLError, OSError) as error:
        status, body = None, repr(error)
    return Answer(started, path, status, time.monotonic() - started, body)


class Poller:
    """Asks every page every ``interval_s`` from a thread, keeping every answer."""

    def __init__(self, port: int, interval_s: float = 0.5) -> None:
        self.port = port
        self.interval_s = interval_s
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.answers.extend(ask(self.port, path) for path in PAGES)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def of(self, path: str, start: float = 0.0, end: float = float("inf")) -> list[Answer]:
        """The answers of one page asked between ``start`` and ``end``."""
        return [a for a in self.answers if a.path == path and start <= a.at <= end]


def sample(answer: Answer, name: str) -> float | None:
    """An unlabelled sample of a /metrics answer, or None."""
    for line in answer.body.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None
