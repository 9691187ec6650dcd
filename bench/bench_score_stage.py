"""The agents' own work per transaction, by micro-batch size: no Kafka, no Redis, no Faust.

Run: ``.venv/bin/python bench/bench_score_stage.py [--transactions 240000 --days 60]
[--batches 25,100,250,500]``.

`bench_pipeline.py` measures the worker as a whole, where the producer, the fetch
thread, Redis flushes and the event loop share the CPU with the agents, and its numbers
move by a quarter between runs on a shared 2-core machine. This one runs the two stages
that do the domain work, as the worker builds them (``streams.pipeline.build_pipeline``:
the watermark gate and the source clock on, 6 partitions), in this process, on in-memory
tables (``streams.tablestore.memory``), so a change to the hot path can be measured in
seconds and alternated with the old code:

- ``ScoreStage.process`` on micro-batches of the dataset's transactions in time order
  (mixed partitions, as the fetch loop hands them over at a live pace), each encoded
  with the transaction contract and carrying a ``fraudstream-sent-ms`` header;
- ``TerminalStage.process_transactions`` on the forward messages the scorer sent for
  that batch, then ``ScoreStage.release_held`` (the release task's call);
- a flush of both tables every `FLUSH_EVERY_S` of wall-clock time, as the worker's
  commit interval does.

The send function encodes nothing itself (the stages hand it bytes) and returns a done
future: the producer's cost is not here. The model is a logistic regression fitted on the
first days' offline features, its threshold set to alert on about 2 % of them.

Per batch size, after the warm-up days (states filled, not timed), the timed transactions
go in slices of `SLICE`, in `ROUNDS` rounds (each on fresh tables, warmed up again).
Printed: microseconds per transaction of the scorer, of the terminal agent and of both in
the fastest slice, and of both in the median and slowest slice; the load average before
and after. The fastest slice is the number to compare: on this project's shared 2-core
machine the same pure-Python loop runs from 0.21 to 0.37 s from one second to the next,
so medians move by a fifth between runs; alternate an old and a new version and compare
their fastest slices.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
from bench_pipeline import simulation_config
from faust.types import TP

from features.offline import compute_features
from features.online import OnlineFeatures
from features.simulator import simulate
from features.spec import DEFAULT_FEATURES, Entity
from models.estimators import BASELINE_PARAMS, ModelKind, fit
from models.registry import LoadedModel, ModelRegistry
from models.training import feature_baseline
from streams import heap
from streams.contracts import TRANSACTION
from streams.kafka import SENT_AT_HEADER
from streams.metrics import PipelineMetrics
from streams.pipeline.intake import Intake
from streams.pipeline.model import ModelSlot
from streams.pipeline.score import ScoreStage, ScoreTopics
from streams.pipeline.tables import DecodedStates
from streams.pipeline.terminal import TerminalStage
from streams.pipeline.terminals import KeyPartitioner, TerminalLookup, mark_key
from streams.pipeline.watermarks import (
    ReportEnds,
    SourceClock,
    TerminalNeeds,
    TerminalWatermarks,
    WatermarkGate,
)
from streams.records import Transaction
from streams.tablestore.memory import MemoryPartitionStore

PARTITIONS: Final = 6
DAY_MS: Final = 86_400_000
WARM_UP_DAYS: Final = 37
ROUNDS: Final = 3
FLUSH_EVERY_S: Final = 1.0
#: Transactions timed together: the fastest slice is the least disturbed by the machine.
SLICE: Final = 5_000
WIDTHS: Final = (13, 15, 11, 14, 11)
TOPICS: Final = ScoreTopics(
    source="transactions",
    alerts="alerts",
    scores=None,
    forwards="transactions-by-terminal",
    dlq="transactions-dlq",
)


class Message:
    """What the stages read of a Kafka message (Faust's ``ConsumerMessage`` attributes)."""

    __slots__ = ("headers", "key", "offset", "partition", "timestamp", "topic", "tp", "value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.tp = TP(topic, partition)
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = time.time()


class Record:
    """One fetched record (``streams.faustcompat.rawbatches.FetchedRecord``'s attributes)."""

    __slots__ = ("key", "message", "value")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.key = message.key
        self.value = message.value


class Outputs:
    """The stages' send: keeps the forward messages for the terminal agent, drops the rest."""

    def __init__(self) -> None:
        self.forwards: list[Message] = []
        self.sent = 0
        self._offsets = [0] * PARTITIONS
        self._done: asyncio.Future[None] | None = None

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: Any,
    ) -> asyncio.Future[None]:
        self.sent += 1
        if topic == TOPICS.forwards:
            assert partition is not None
            offset = self._offsets[partition]
            self._offsets[partition] = offset + 1
            self.forwards.append(Message(topic, partition, offset, key, value, list(headers or ())))
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            self._done.set_result(None)
        return self._done


def train(frame: pl.DataFrame, until_ms: int, registry: Path) -> LoadedModel:
    """A logistic regression on the features of the transactions before ``until_ms``."""
    names = DEFAULT_FEATURES.names
    early = frame.filter(pl.col("tx_time").dt.epoch("ms") < until_ms)
    features = compute_features(early, DEFAULT_FEATURES)
    x = features.select(names).to_numpy().astype(np.float64)
    y = features["is_fraud"].to_numpy().astype(bool)
    kind = ModelKind.LOGISTIC_REGRESSION
    estimator = fit(kind, BASELINE_PARAMS[kind], x, y, seed=0)
    scores = estimator.predict_proba(x)[:, 1]
    threshold = float(np.quantile(scores, 0.98))
    models = ModelRegistry(registry)
    metadata = models.register(
        estimator,
        kind=kind,
        feature_names=names,
        threshold={"value": threshold, "objective": "fixed"},
        metrics={},
        params=BASELINE_PARAMS[kind],
        training={"rows": len(x)},
        feature_baseline=feature_baseline(x),
    )
    return models.load(metadata.version, names)


def transaction_records(frame: pl.DataFrame) -> list[Record]:
    """Each row as the transactions topic's record, on its key's partition, in time order."""
    partition_of = KeyPartitioner(PARTITIONS)
    offsets = [0] * PARTITIONS
    records = []
    rows = frame.with_columns(pl.col("tx_time").dt.epoch("ms"))
    for row in rows.iter_rows(named=True):
        tx = Transaction(
            tx_id=row["tx_id"],
            tx_time=row["tx_time"],
            customer_id=row["customer_id"],
            terminal_id=row["terminal_id"],
            amount=Decimal(f"{row['amount']:.2f}"),
            currency=row["currency"],
        )
        key = tx.customer_id.encode()
        partition = partition_of(key)
        offset = offsets[partition]
        offsets[partition] = offset + 1
        headers = [(SENT_AT_HEADER, str(int(time.time() * 1000)).encode())]
        records.append(
            Record(Message(TOPICS.source, partition, offset, key, TRANSACTION.encode(tx), headers))
        )
    return records


class Rig:
    """The scorer and the terminal agent as a worker builds them, on in-memory tables."""

    def __init__(self, model: LoadedModel) -> None:
        features = DEFAULT_FEATURES
        online = OnlineFeatures(features)
        self.metrics = PipelineMetrics()
        self.outputs = Outputs()
        self.customers = MemoryPartitionStore()
        self.terminals = MemoryPartitionStore()
        self.slot = ModelSlot(features.names, reasons=3)
        self.slot.activate(model)
        needs = TerminalNeeds.of(features)
        gate = WatermarkGate(
            TerminalWatermarks(self.terminals, PARTITIONS, mark_key),
            needs,
            max_wait_s=30.0,
            observe_wait=self.metrics.watermark_wait.observe,
        )
        intake = Intake(
            partitions=PARTITIONS,
            max_ahead_ms=300_000,
            send=self.outputs.send,
            metrics=self.metrics,
        )
        # Shared as build_pipeline shares them.
        terminal_states = DecodedStates("terminal")
        self.score = ScoreStage(
            online=online,
            customers=self.customers,
            terminals=TerminalLookup(self.terminals, PARTITIONS, terminal_states),
            slot=self.slot,
            send=self.outputs.send,
            topics=TOPICS,
            metrics=self.metrics,
            max_event_bytes=65_536,
            intake=intake,
            gate=gate,
            clock=SourceClock(features.policies[Entity.CUSTOMER].allowed_lateness_ms),
        )
        if needs.reports_lag_ms is not None:
            self.score.report_ends = ReportEnds(self._no_reports, needs.reports_lag_ms)
        self.terminal = TerminalStage(
            windows=online.entities[Entity.TERMINAL],
            table=self.terminals,
            send=self.outputs.send,
            dlq=TOPICS.dlq,
            metrics=self.metrics,
            max_event_bytes=65_536,
            intake=Intake(
                partitions=PARTITIONS,
                max_ahead_ms=300_000,
                send=self.outputs.send,
                metrics=self.metrics,
            ),
            decoded=terminal_states,
        )
        self._flushed = time.monotonic()

    @staticmethod
    async def _no_reports() -> dict[int, int]:
        return dict.fromkeys(range(PARTITIONS), 0)

    async def run(self, records: Sequence[Record], batch: int) -> tuple[float, float]:
        """Both stages over ``records`` in batches; their seconds (scorer, terminal)."""
        score_s = terminal_s = 0.0
        clock = time.perf_counter
        for start in range(0, len(records), batch):
            began = clock()
            await self.score.process(records[start : start + batch])
            scored = clock()
            forwards, self.outputs.forwards = self.outputs.forwards, []
            if forwards:
                await self.terminal.process_transactions([Record(m) for m in forwards])
            await self.score.release_held()
            score_s += scored - began
            terminal_s += clock() - scored
            if time.monotonic() - self._flushed >= FLUSH_EVERY_S:
                await self.customers.flush()
                await self.terminals.flush()
                self._flushed = time.monotonic()
        return score_s, terminal_s


async def measure(
    model: LoadedModel, warm: Sequence[Record], timed: Sequence[Record], batch: int
) -> list[tuple[float, float]]:
    """One round: warm up on ``warm``, then time ``timed`` in slices of `SLICE`.

    Returns each slice's microseconds per transaction (scorer, terminal agent).
    """
    rig = Rig(model)
    await rig.run(warm, 500)
    slices = []
    for start in range(0, len(timed), SLICE):
        part = timed[start : start + SLICE]
        score_s, terminal_s = await rig.run(part, batch)
        slices.append((score_s / len(part) * 1e6, terminal_s / len(part) * 1e6))
    assert rig.score.held == 0, "transactions left held"
    return slices


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--transactions", type=int, default=240_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--batches", default="25,100,250,500", help="batch sizes")
    parser.add_argument("--timed", type=int, default=40_000, help="transactions timed")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.batches.split(",")]

    started_load = load()
    frame = simulate(simulation_config(args.transactions, args.days))
    times = frame["tx_time"].dt.epoch("ms").to_list()
    split = times[0] + WARM_UP_DAYS * DAY_MS
    with tempfile.TemporaryDirectory() as registry:
        model = train(frame, split, Path(registry))
        records = transaction_records(frame)
        cut = next(i for i, t in enumerate(times) if t >= split)
        warm, timed = records[:cut], records[cut : cut + args.timed]
        print(
            f"{len(frame):,} transactions, {frame['customer_id'].n_unique():,} customers, "
            f"{frame['terminal_id'].n_unique():,} terminals; warm-up {len(warm):,} "
            f"({WARM_UP_DAYS} days), timed {len(timed):,}; {args.rounds} rounds per size; "
            f"load {started_load}"
        )
        # As the worker does once started (streams.heap): what is alive now is frozen out
        # of the collector's walks, and generation 0 is collected less often.
        heap.settle("bench set up")
        print(f"{'':>6} {'--- fastest slice, us/tx ---':^41}  {'both, us/tx over the slices':^25}")
        columns = ("scorer", "terminal", "both", "median", "slowest")
        print(
            f"{'batch':>6} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, WIDTHS, strict=True))
        )
        for size in sizes:
            slices = [
                piece
                for _ in range(args.rounds)
                for piece in asyncio.run(measure(model, warm, timed, size))
            ]
            both = sorted(s + t for s, t in slices)
            fastest = min(slices, key=sum)
            values = (*fastest, both[0], statistics.median(both), both[-1])
            print(
                f"{size:>6} "
                + " ".join(f"{v:>{w}.1f}" for v, w in zip(values, WIDTHS, strict=True))
            )
            gc.collect()  # this size's garbage is not the next one's to walk
    print(f"load average: at start {started_load}, at the end {load()}")


if __name__ == "__main__":
    main()
