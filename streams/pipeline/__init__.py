"""The live pipeline: the Faust agents, tables and tasks of a fraudstream worker.

``build_pipeline(app, settings)`` declares on a Faust app (``streams.app.create_app``):

- the ``score`` agent on ``transactions`` (``streams.pipeline.score``), with the
  ``customer_windows`` table;
- the ``terminal_activity`` agent on ``transactions-by-terminal`` and the
  ``terminal_frauds`` agent on ``fraud-reports`` (``streams.pipeline.terminal``), with
  the ``terminal_windows`` table;
- a task following the model-control topic (``streams.modelcontrol``) that swaps the
  active model between micro-batches;
- a task reporting partitions that stall with a backlog (``streams.stall``);
- tasks exporting consumer lag (``streams.lag``) and rebalances (``streams.rebalance``),
  and the tables' in-memory entries and Redis availability (``streams.tablestats``);
- a task declaring this worker's source watermarks to every terminal partition each
  second (``streams.watermarktick``), which lets the scorer wait until the terminal
  features it reads are final (``streams.pipeline.watermarks``);
- a task logging one progress line a minute while the worker scores
  (``streams.progress``);
- when ``otlp_endpoint`` is set, a span per agent micro-batch (``streams.tracing``);
  otherwise the agents run their batches untouched;
- a watch on every output's delivery (``streams.delivery``): an output Kafka refuses
  for good stops the tables' Redis flushes, so the events it came from are processed
  again after a restart;
- the worker's web server (``streams.webserver``, not started here): ``/health``,
  ``/ready`` and ``/metrics`` answered from threads, never waiting on the event loop
  or a dependency (``streams.health``).

Every topic is read and written as raw bytes: the agents decode with the validating
contracts (``streams.contracts``) and encode with ``streams.pipeline.outputs``, never
through Faust's codecs, so bad input becomes a dead letter instead of a crashed agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust
from aiokafka import TopicPartition
from faust.types import StreamT

from features.online import OnlineFeatures
from features.spec import DEFAULT_FEATURES, Entity, FeatureSet
from streams import heap
from streams.delivery import CHECK_EVERY_S, DeliveryWatch, Refusal
from streams.endoffsets import EndOffsets
from streams.faustcompat import metadata
from streams.faustcompat.rawbatches import FetchedRecord, RawBatches
from streams.health import LoopHeartbeat, Outages, WorkerHealth, install_pages
from streams.lag import LagReporter, TakenRecords, watch_lag
from streams.metrics import GcPauseObserver, PipelineMetrics, watch_event_loop
from streams.modelcontrol import ModelFollower
from streams.pipeline.guard import BatchGuard
from streams.pipeline.intake import Intake
from streams.pipeline.model import ModelSlot
from streams.pipeline.outputs import Headers
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
from streams.progress import report_progress
from streams.rebalance import RebalanceReporter, RebalanceTracker, watch_rebalances
from streams.settings import Settings
from streams.stall import StallDetector, StallReporter, watch_partitions
from streams.tablecensus import take_censuses
from streams.tablestats import observe_tables
from streams.tablestore import RedisStore
from streams.tablestore.fausttable import FaustTableStore, partition_store_of
from streams.tablestore.partition_store import PartitionStore
from streams.tracing import batch_spans
from streams.watermarktick import tick_watermarks
from streams.webserver import WebServer

if TYPE_CHECKING:
    from streams.batchspans import BatchSpans, RunBatch

logger = logging.getLogger(__name__)

#: Shortest time between two releases of held transactions by the release task.
RELEASE_GAP_S = 0.01

CUSTOMER_TABLE = "customer_windows"
TERMINAL_TABLE = "terminal_windows"


@dataclass
class Pipeline:
    """The parts of a worker's pipeline, for tests and benchmarks to look into.

    Attributes:
        app: The Faust app.
        metrics: The worker's metrics.
        slot: The active model.
        score: The score agent's stage.
        terminal: The terminal agents' stage.
        follower: The model-control follower.
        web: The worker's web server (health, readiness, metrics); the caller starts it.
        heartbeat: Marks the event loop's turns for liveness; the caller starts it on
            the worker's loop.
        deliveries: The watch on the outputs' delivery futures.
        spans: The batch spans when tracing is on (the caller closes them on stop),
            else None.
    """

    app: faust.App
    metrics: PipelineMetrics
    slot: ModelSlot
    score: ScoreStage
    terminal: TerminalStage
    follower: ModelFollower
    web: WebServer
    heartbeat: LoopHeartbeat
    deliveries: DeliveryWatch
    spans: BatchSpans | None = None


def build_pipeline(
    app: faust.App,
    settings: Settings,
    *,
    features: FeatureSet = DEFAULT_FEATURES,
    on_refusal: Callable[[Refusal], None] = lambda refusal: None,
) -> Pipeline:
    """Declare the pipeline's topics, tables, agents and tasks on ``app``.

    ``on_refusal`` is called once, when Kafka first refuses an output for good
    (``streams.delivery``); the worker command stops the worker there.
    """
    names = settings.topic_names
    partitions = settings.topic_partitions
    metrics = PipelineMetrics()
    deliveries = DeliveryWatch(
        on_refusal, lambda topic: metrics.outputs_undelivered.labels(topic=topic).inc()
    )
    online = OnlineFeatures(features)

    def raw_topic(name: str) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )

    def raw_table(name: str) -> Any:
        # bytes key and value types make Faust use its raw codec for the store and
        # changelog: the agents encode states themselves (EntityState.to_bytes).
        return app.Table(name, key_type=bytes, value_type=bytes, partitions=partitions)

    # The agents use each table through its store's PartitionStore interface.
    customers = partition_store_of(raw_table(CUSTOMER_TABLE))
    terminals = partition_store_of(raw_table(TERMINAL_TABLE))
    if isinstance(terminals, FaustTableStore):
        # Its peek reads this worker's partitions only: terminal features would miss
        # the partitions of other workers.
        logger.warning(
            "table store %s cannot read other workers' partitions: run one worker only, "
            "or use redis:// (the default)",
            settings.table_store,
        )

    partition_of = OutputPartitions(app)
    spans = batch_spans(settings)

    async def produce(
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: Headers | None,
    ) -> Any:
        if partition is None and key is not None:
            partition = partition_of(topic, key)
        delivery = await app.producer.send(topic, key, value, partition, None, headers)
        deliveries.watch(topic, partition, delivery)
        return delivery

    # Traced batches count their own sends (dead letters, alerts) by topic.
    send = produce if spans is None else spans.counting(produce)

    def on_swap(version: str, previous: str | None) -> None:
        metrics.set_model_version(version)
        if previous is not None:  # the first model a worker activates replaces none
            metrics.model_swaps.inc()
        heap.settle(f"model {version} active", collect=False)

    slot = ModelSlot(features.names, reasons=settings.alert_reasons, on_swap=on_swap)
    max_ahead_ms = settings.max_event_time_ahead_s * 1000

    def intake() -> Intake:
        return Intake(partitions=partitions, max_ahead_ms=max_ahead_ms, send=send, metrics=metrics)

    # Event-time watermarks: the scorer reads terminal features only once final.
    clock = SourceClock(features.policies[Entity.CUSTOMER].allowed_lateness_ms)
    needs = TerminalNeeds.of(features)
    gate = WatermarkGate(
        TerminalWatermarks(terminals, partitions, mark_key),
        needs,
        max_wait_s=settings.watermark_wait_max_s,
        observe_wait=metrics.watermark_wait.observe,
    )
    # The terminal agents keep the states they write decoded; the scorer reads them
    # through the same keep (streams.pipeline.terminals.TerminalLookup).
    terminal_states = DecodedStates("terminal")
    score_stage = ScoreStage(
        online=online,
        customers=customers,
        terminals=TerminalLookup(terminals, partitions, terminal_states),
        slot=slot,
        send=send,
        topics=ScoreTopics(
            source=names["transactions"],
            alerts=names["alerts"],
            scores=names["scores"] if settings.emit_scores else None,
            forwards=names["transactions_by_terminal"],
            dlq=names["dlq"],
        ),
        metrics=metrics,
        max_event_bytes=settings.max_event_bytes,
        intake=intake(),
        gate=gate if gate.active else None,
        clock=clock,
    )
    score_stage.generation = lambda: int(app.rebalancing_count)
    outages = Outages([customers, terminals])
    score_stage.unavailable = lambda: bool(outages.down())
    terminal_stage = TerminalStage(
        windows=online.entities[Entity.TERMINAL],
        table=terminals,
        send=send,
        dlq=names["dlq"],
        metrics=metrics,
        max_event_bytes=settings.max_event_bytes,
        intake=intake(),
        decoded=terminal_states,
    )

    # One ListOffsets request for every reports partition, assigned here or not, on a
    # connection of its own (streams.endoffsets says why not Faust's consumer's).
    reports_ends = EndOffsets(
        settings, [TopicPartition(names["fraud_reports"], p) for p in range(partitions)]
    )
    if needs.reports_lag_ms is not None:
        score_stage.report_ends = ReportEnds(reports_ends.read, needs.reports_lag_ms)

    async def halt(agent: str, exc: BaseException) -> None:
        # No later batch may pass the failed one (streams.pipeline.guard): the agent
        # waits here until the crash it starts stops the worker (streams.crashexit ends
        # a stop that hangs).
        logger.error(
            "agent %s stopped on %s: %s; it takes no later batch, and the worker stops "
            "(a restart resumes from the last flush)",
            agent,
            type(exc).__name__,
            exc,
        )
        await app.crash(exc)
        await asyncio.Event().wait()

    def batch_runner(
        agent: str, source: str, applied: Any, applied_as: str = "applied", **span: Any
    ) -> RunBatch:
        """The agent's guarded batch run, with a span per batch when tracing is on."""
        run: RunBatch = BatchGuard(agent, send, names["dlq"], metrics, halt).run
        if spans is None:
            return run
        return spans.wrap(
            agent,
            run,
            source=source,
            dlq=names["dlq"],
            applied=applied,
            applied_as=applied_as,
            **span,
        )

    taken = TakenRecords()
    # Each agent takes its topic's records in micro-batches straight from the fetch
    # loop, without a Faust event per record (streams.faustcompat.rawbatches).
    queues = {
        topic: RawBatches(app, topic, max_records=settings.batch_max)
        for topic in (
            names["transactions"],
            names["transactions_by_terminal"],
            names["fraud_reports"],
        )
    }

    async def batches(stream: StreamT[Any]) -> AsyncIterator[list[FetchedRecord]]:
        (topic,) = stream.channel.topics  # type: ignore[attr-defined]
        async for records in queues[topic].batches(stream.channel):
            taken.note(records)
            yield records

    @app.agent(raw_topic(names["transactions"]), name="score")
    async def score(stream: StreamT[Any]) -> None:
        # Wait for a model before taking any event: an event taken is tracked by Faust
        # until acknowledged, and a worker stopped while holding one would wait forever.
        await slot.wait()
        run = batch_runner(
            "score",
            names["transactions"],
            metrics.transactions,
            "scored",
            alerts=names["alerts"],
            model_version=lambda: None if slot.active is None else slot.active.version,
        )
        async for events in batches(stream):
            await run(score_stage.process, events)

    # Set when this worker's terminal agents have applied a batch: what held
    # transactions wait for has likely moved (on another worker, it shows in Redis after
    # that worker's next flush, and the release task's timer finds it).
    applied = asyncio.Event()

    @app.agent(raw_topic(names["transactions_by_terminal"]), name="terminal_activity")
    async def terminal_activity(stream: StreamT[Any]) -> None:
        run = batch_runner(
            "terminal_activity", names["transactions_by_terminal"], metrics.terminal_transactions
        )
        async for events in batches(stream):
            await run(terminal_stage.process_transactions, events)
            applied.set()

    @app.agent(raw_topic(names["fraud_reports"]), name="terminal_frauds")
    async def terminal_frauds(stream: StreamT[Any]) -> None:
        run = batch_runner("terminal_frauds", names["fraud_reports"], metrics.fraud_reports)
        async for events in batches(stream):
            await run(terminal_stage.process_reports, events)
            applied.set()

    follower = ModelFollower(
        settings,
        features.names,
        slot.activate,
        on_load_failure=lambda version, reason: metrics.model_load_failures.inc(),
        on_fallback=lambda f: metrics.set_model_fallback(f.refused_version if f else None),
    )

    @app.task  # type: ignore[untyped-decorator]
    async def follow_models() -> None:
        try:
            await follower.load_initial()
        except Exception:
            logger.exception("could not load the initial model; waiting for a promotion")
        await follower.follow()

    @app.task  # type: ignore[untyped-decorator]
    async def observe_event_loop() -> None:
        heap.settle("worker started")
        GcPauseObserver(metrics.gc_pause).install()
        await watch_event_loop(metrics.event_loop_lag)

    stalls = StallDetector(settings.partition_stall_after_s)
    stall_reporter = StallReporter(metrics.partition_stalled, metrics.partition_stalls)

    @app.task  # type: ignore[untyped-decorator]
    async def watch_stalls() -> None:
        await watch_partitions(app, stalls, stall_reporter)

    @app.task  # type: ignore[untyped-decorator]
    async def watch_consumer_lag() -> None:
        await watch_lag(app, LagReporter(metrics.consumer_lag, metrics.consumer_lag_seconds, taken))

    rebalances = RebalanceReporter(
        metrics.rebalances, metrics.rebalance_duration, metrics.assigned_partitions
    )

    @app.task  # type: ignore[untyped-decorator]
    async def watch_rebalancing() -> None:
        await watch_rebalances(app, RebalanceTracker(app.rebalancing_count), rebalances)

    @app.task  # type: ignore[untyped-decorator]
    async def release_held() -> None:
        # Held transactions go as soon as they read final state, batches or not: when
        # a terminal batch of this worker was applied, else every `RECHECK_S`; at most
        # every `RELEASE_GAP_S`, so a backlog is still scored in batches.
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(applied.wait(), timeout=gate.pause_s)
            applied.clear()
            try:
                await score_stage.release_held()
            except Exception:
                if app.should_stop:
                    # The producer closed under a release: the held transactions were
                    # not applied, and the store's offsets do not pass them.
                    return
                logger.exception("releasing held transactions failed; trying again")
            await asyncio.sleep(RELEASE_GAP_S)

    @app.timer(CHECK_EVERY_S)  # type: ignore[untyped-decorator]
    async def check_deliveries() -> None:
        # Between flushes too: a refusal stops the worker at once, and outputs read
        # are let go (a memory:// table store never asks).
        deliveries.failure()

    @app.task  # type: ignore[untyped-decorator]
    async def close_end_offsets() -> None:
        # The reader connects on its first reading; it closes when the worker stops.
        try:
            await asyncio.Event().wait()
        finally:
            await reports_ends.close()

    @app.task  # type: ignore[untyped-decorator]
    async def declare_watermarks() -> None:
        await tick_watermarks(
            app,
            clock=clock,
            send=send,
            transactions=names["transactions"],
            forwards=names["transactions_by_terminal"],
            partitions=partitions,
        )

    @app.task  # type: ignore[untyped-decorator]
    async def count_tables() -> None:
        await take_censuses(
            {CUSTOMER_TABLE: customers, TERMINAL_TABLE: terminals},
            entries=metrics.table_stored_entries,
            size=metrics.table_stored_bytes,
            seconds=metrics.table_census_seconds,
            interval_s=settings.table_census_interval_s,
            rebalancing=lambda: bool(app.rebalancing),
        )

    @app.task  # type: ignore[untyped-decorator]
    async def log_progress() -> None:
        await report_progress(metrics, settings.progress_log_interval_s)

    # Called in the web server's threads: reads of what the loop publishes (the active
    # model, the follower's refusal, Faust's rebalancing flag); the follower's lock shows
    # the model and its fallback from one moment.
    def readiness() -> str | None:
        with follower.lock:
            active, refused = slot.active, follower.refused
        if active is None:
            if refused is not None:
                return f"no promoted model loads; the newest, {refused.version}: {refused.reason}"
            return "no model promoted yet"
        if app.rebalancing:
            return "partitions are being rebalanced"
        return None

    def model_details() -> dict[str, Any]:
        # Ready on a fallback model, but not silently: the body names both versions.
        with follower.lock:
            fallback, active = follower.fallback, slot.active
        details: dict[str, Any] = {"model_version": active.version if active else None}
        if fallback is not None:
            details["model_fallback"] = fallback.as_dict()
        return details

    stores = {CUSTOMER_TABLE: customers, TERMINAL_TABLE: terminals}
    for name, store in stores.items():
        _observe_flushes(name, store, metrics)
        if isinstance(store, RedisStore):
            store.delivery_failure = deliveries.failure
    observe_tables(stores, metrics.table_entries, metrics.redis_available)
    heartbeat = LoopHeartbeat()
    health = WorkerHealth(
        heartbeat,
        Outages(stores.values()),
        readiness,
        model_details,
        stuck_after_s=settings.loop_stuck_after_s,
    )
    web = WebServer(settings.web_host, settings.web_port)
    install_pages(web, health, metrics)
    return Pipeline(
        app, metrics, slot, score_stage, terminal_stage, follower, web, heartbeat, deliveries, spans
    )


class OutputPartitions:
    """The partition the producer's default partitioner would give a keyed output message.

    The same choice as aiokafka's (murmur2 of the key over the topic's partitions, from
    the producer's metadata, re-read every `REFRESH_S` so a topic that grows is
    followed), memoised per key: a score record per transaction makes the producer's
    pure-Python murmur2 a visible cost. None (the producer then decides) until the
    producer has the topic's metadata.
    """

    REFRESH_S = 5.0

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._topics: dict[str, tuple[float, KeyPartitioner | None]] = {}
        self._partitioners: dict[tuple[str, int], KeyPartitioner] = {}

    def __call__(self, topic: str, key: bytes) -> int | None:
        """The partition of ``key`` in ``topic``, or None while the topic is unknown."""
        now = time.monotonic()
        known = self._topics.get(topic)
        if known is None or now - known[0] > self.REFRESH_S:
            known = self._topics[topic] = (now, self._partitioner(topic))
        partitioner = known[1]
        return None if partitioner is None else partitioner(key)

    def _partitioner(self, topic: str) -> KeyPartitioner | None:
        partitions = metadata.producer_partitions(self.app.producer, topic)
        if not partitions:
            return None
        count = len(partitions)
        partitioner = self._partitioners.get((topic, count))
        if partitioner is None:
            partitioner = self._partitioners[(topic, count)] = KeyPartitioner(count)
        return partitioner


def _observe_flushes(table: str, store: PartitionStore, metrics: PipelineMetrics) -> None:
    """Time the Redis flushes of a table, and count its refused partitions (redis:// only)."""
    if isinstance(store, RedisStore):
        store.flush_observer = metrics.redis_flush.labels(table=table).observe
        store.refusal_observer = metrics.refused_partitions.labels(table=table).set
