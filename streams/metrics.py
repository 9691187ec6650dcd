"""Prometheus metrics of one stream worker, and the ``/metrics`` page that serves them.

Every worker owns one :class:`PipelineMetrics`, built on its own ``CollectorRegistry``
rather than prometheus-client's global one: several apps in one process (tests,
benchmarks) then never collide on metric names or share values. The worker serves the
registry at ``/metrics`` from a thread of its web server (``streams.health``), so a
scrape answers while the event loop waits on a dependency; the registry is thread-safe.

Hot-path contract: the agents call these objects once per micro-batch (``inc(n)``,
one ``observe``), not once per event; a prometheus-client observation takes a lock and
costs about a microsecond, which is noise per batch but would not be per event at
thousands of events a second. Per-event observations are fine only where events are rare
(the latency of each alert).
"""

from __future__ import annotations

import asyncio
import gc
import math
import platform
import threading
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, Final

import faust
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from streams.contracts import Problem
from streams.kafkalog import CONNECTION_ERRORS, OUTAGE_LOG

# No `_created` series: one more series per counter and histogram (and per label set)
# that no dashboard or rule reads. Process-wide, as prometheus-client's switch is.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Transactions per micro-batch: from single stragglers (idle stream) to catch-up batches.
BATCH_SIZE_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)

#: Latencies from 1 ms to 30 s, log-spaced: steps of x1.25 to x1.5 between 5 and 200 ms,
#: where alert latency should lie (its quantiles are read precisely there), and of x2 to
#: x3 outside, where a rough figure is enough and every bucket costs a series.
LATENCY_BUCKETS: Final = (
    0.001,
    0.002,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)

#: Rebalances: a fraction of a second (a worker joins an idle group) to minutes (a
#: recovery); the 1-3 s a rebalance under load costs is read precisely.
REBALANCE_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)

#: Holds on terminal watermarks: milliseconds in a fast replay (the reports partitions'
#: ends read once more), seconds to minutes on a backlog after an outage.
WATERMARK_WAIT_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)

#: The sources of ``fraudstream_duplicates_skipped``, started at zero like the DLQ problems.
DUPLICATE_SOURCES: Final = ("transactions", "fraud_reports", "scorer")

#: Redis pipeline flushes: sub-millisecond on a local server, seconds when it struggles.
REDIS_FLUSH_BUCKETS: Final = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)


class PipelineMetrics:
    """All metrics of one worker, on their own registry.

    The agents update the attributes directly (``metrics.transactions.inc(len(batch))``,
    ``metrics.dlq.labels(problem="not_json").inc()``); only the metrics whose update is
    more than one call have methods (:meth:`set_model_version`,
    :meth:`observe_event_times`). Call them once per micro-batch, never per event: see
    the module docstring.

    Attributes:
        registry: The registry holding every metric below plus the process, GC and
            platform collectors; what :meth:`render` exports.
        transactions: Transactions scored.
        alerts: Alerts sent.
        dlq: Records sent to the dead-letter topic, by ``problem``; every
            :class:`~streams.contracts.Problem` starts at 0 so ``rate()`` sees the first.
        fraud_reports: Fraud reports applied to terminal state.
        terminal_transactions: Transactions applied to terminal state.
        duplicates_skipped: Inputs applied once already and skipped, by ``source``: the
            terminal agent's replayed forwards and reports, the scorer's transactions
            delivered twice (``source="scorer"``).
        rerouted: Input records moved to their key's partition, by topic.
        records_failed: Input records an agent raised on, by outcome.
        outputs_undelivered: Outputs Kafka refused for good, by topic
            (``streams.delivery``): the worker stops at the first.
        inexact_terminal_reads: Terminal feature reads that could not be exact: the
            terminal state had moved more than its allowed lateness past the transaction,
            or it was written under a feature set that kept fewer columns (after an
            upgrade, until the terminal agent rewrites it).
        model_swaps: Replacements of an active model by another; the first model a
            worker activates (at start or later) replaces none and is not counted.
        model_load_failures: Model versions that failed to load or verify (each try).
        model_fallback: 1 for the label ``refused_version`` while the worker scores with
            an older version because the newest promotion does not load; no series
            otherwise.
        batch_size: Transactions per micro-batch.
        event_to_alert_latency: Producer send time (Kafka header) to alert send, seconds.
        processing_latency: Per micro-batch, from taken off the stream to outputs sent.
        redis_flush: Duration of a table flush to Redis, by ``table``.
        refused_partitions: Source partitions a table leaves unprocessed, by ``table``:
            Redis lost their state and the log no longer holds every event to rebuild it.
        model_info: 1 for the label ``version`` of the active model, no other series.
        terminal_lag: Newest scored event time minus newest terminal event time,
            seconds; NaN until both are known.
        scorer_event_time: Newest transaction event time scored, epoch seconds; NaN
            until the first batch.
        terminal_event_time: Newest event time applied to terminal state, epoch seconds;
            NaN until the first one.
        fetch_delay: Per batch, its oldest transaction's Kafka timestamp to the fetch
            loop's hand-over to its agent's queue (streams.faustcompat.rawbatches).
        queue_delay: Per batch, that hand-over to the batch's processing.
        event_loop_lag: How late a periodic timer of the event loop fires: time the
            loop was held by something (a long batch, a synchronous call, a collection).
        gc_pause: Duration of the garbage collector's generation 1 and 2 collections,
            by ``generation`` (generation 0 runs too often and too briefly to time).
        partition_stalled: 1 while an assigned partition has a backlog and has not
            progressed for the stall time, by ``topic`` and ``partition``
            (``streams.stall``); 0 once it moves again.
        partition_stalls: Stalls detected (``streams.stall``).
        consumer_lag: Records past the processed position of each assigned source
            partition, by ``topic`` and ``partition`` (``streams.lag``).
        rebalances: Rebalances this worker took part in (``streams.rebalance``).
        rebalance_duration: From a rebalance's start to the worker processing again.
        assigned_partitions: Source partitions assigned to this worker, by ``topic``.
        table_entries: Entries a table holds in this worker's memory, by ``table``
            (``streams.tablestats``): the redis:// store's cache, a memory:// table's data.
        redis_available: 0 while the tables' Redis is failing calls, else 1; NaN with
            no Redis-backed table (``streams.tablestats``).
        kafka_available: 0 while this process's Kafka clients fail to reach a broker
            (``streams.kafkalog``), else 1.
        build_info: 1 for the versions this worker runs (fraudstream, Faust, aiokafka,
            Python).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Create the metrics on ``registry``, or on a new registry of their own.

        Args:
            registry: Where to register. Passing prometheus-client's global ``REGISTRY``
                is possible but then only one instance may exist per process: names
                registered twice raise ``ValueError``.
        """
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Counters: the _total suffix is added by prometheus-client.
        self.transactions = Counter("fraudstream_transactions", "Transactions scored.", registry=r)
        self.alerts = Counter("fraudstream_alerts", "Alerts sent.", registry=r)
        self.dlq = Counter(
            "fraudstream_dlq_records",
            "Records sent to the dead-letter topic, by class of problem.",
            ["problem"],
            registry=r,
        )
        for problem in Problem:
            # A series that appears only with its first increment hides that increment
            # from rate() and increase(): start every known problem at zero.
            self.dlq.labels(problem=problem.value)
        self.fraud_reports = Counter(
            "fraudstream_fraud_reports", "Fraud reports applied to terminal state.", registry=r
        )
        self.terminal_transactions = Counter(
            "fraudstream_terminal_transactions",
            "Transactions applied to terminal state.",
            registry=r,
        )
        self.duplicates_skipped = Counter(
            "fraudstream_duplicates_skipped",
            "Inputs applied once already and skipped (replays, producer retries), by source.",
            ["source"],
            registry=r,
        )
        for source in DUPLICATE_SOURCES:
            self.duplicates_skipped.labels(source=source)
        self.rerouted = Counter(
            "fraudstream_records_rerouted",
            "Input records found on another partition than their key's, sent to the right "
            "one, by topic.",
            ["topic"],
            registry=r,
        )
        self.records_failed = Counter(
            "fraudstream_records_failed",
            "Input records an agent failed on (a bug): dead-lettered as internal_error, or "
            "skipped with an ERROR line when even that failed, by outcome.",
            ["outcome"],
            registry=r,
        )
        for outcome in ("dead_lettered", "skipped"):
            self.records_failed.labels(outcome=outcome)
        self.outputs_undelivered = Counter(
            "fraudstream_outputs_undelivered",
            "Outputs Kafka refused with an error no retry cures, by topic: the worker "
            "writes nothing more to Redis and stops, so a restart sends them again.",
            ["topic"],
            registry=r,
        )
        self.inexact_terminal_reads = Counter(
            "fraudstream_terminal_reads_inexact",
            "Terminal feature reads that could not be exact: the terminal state had moved "
            "past the transaction's allowed lateness, lacks a column these features need, "
            "or the scorer stopped waiting for the terminal watermarks.",
            registry=r,
        )
        self.watermark_wait = Histogram(
            "fraudstream_terminal_watermark_wait_seconds",
            "How long the scorer held transactions back until the terminal watermarks said "
            "their terminal features were final (terminal agents behind in event time, as "
            "on a backlog); one observation per release, the longest held.",
            buckets=WATERMARK_WAIT_BUCKETS,
            registry=r,
        )
        self.model_swaps = Counter(
            "fraudstream_model_swaps",
            "Replacements of the active model by another (the first model loaded is not one).",
            registry=r,
        )
        self.model_load_failures = Counter(
            "fraudstream_model_load_failures",
            "Model versions that failed to load or verify.",
            registry=r,
        )
        self.model_fallback = Gauge(
            "fraudstream_model_fallback",
            "1 while the newest promoted version (refused_version) does not load and an "
            "older promoted version scores instead.",
            ["refused_version"],
            registry=r,
        )

        self.batch_size = Histogram(
            "fraudstream_batch_size",
            "Transactions per micro-batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.event_to_alert_latency = Histogram(
            "fraudstream_event_to_alert_latency_seconds",
            "From the producer's send time (Kafka header) to the alert's send.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.processing_latency = Histogram(
            "fraudstream_processing_latency_seconds",
            "Per micro-batch, from taken off the stream to its outputs sent.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_flush = Histogram(
            "fraudstream_redis_flush_seconds",
            "Duration of a table flush to Redis, by table.",
            ["table"],
            buckets=REDIS_FLUSH_BUCKETS,
            registry=r,
        )

        self.refused_partitions = Gauge(
            "fraudstream_table_refused_partitions",
            "Source partitions a table leaves unprocessed: Redis lost their state and the "
            "log no longer holds every event to rebuild it.",
            ["table"],
            registry=r,
        )

        # A labelled gauge rather than an Info: it has no series at all until a model is
        # active, where an unset Info would export an unlabelled 1.
        self.fetch_delay = Histogram(
            "fraudstream_fetch_delay_seconds",
            "Per micro-batch, its oldest transaction: from its Kafka timestamp to the "
            "fetch loop handing it to its agent (time in Kafka and in the fetcher).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_delay = Histogram(
            "fraudstream_queue_delay_seconds",
            "Per micro-batch, its oldest transaction: from the worker handing it to the "
            "stream to the batch's processing (time in the stream's buffer).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "fraudstream_event_loop_lag_seconds",
            "How late a periodic timer on the worker's event loop fires: how long the loop "
            "was held by other work. Every event waits this long too.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gc_pause = Histogram(
            "fraudstream_gc_pause_seconds",
            "Duration of garbage collections of generations 1 and 2, which stop the worker.",
            ["generation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "fraudstream_model_info",
            "1 for the version of the active model.",
            ["version"],
            registry=r,
        )
        self.terminal_lag = Gauge(
            "fraudstream_terminal_aggregation_lag_seconds",
            "Event time of the newest scored transaction minus the event time the "
            "terminal aggregation has reached; terminal features are exact only while "
            "this stays below the 7-day delay.",
            registry=r,
        )
        self.scorer_event_time = Gauge(
            "fraudstream_scorer_event_time_seconds",
            "Event time of the newest transaction scored, epoch seconds.",
            registry=r,
        )
        self.terminal_event_time = Gauge(
            "fraudstream_terminal_event_time_seconds",
            "Newest event time applied to terminal state, epoch seconds.",
            registry=r,
        )
        # NaN, not 0, until known: 0 would read as an event time of 1970 (a lag of
        # decades) or as a perfectly caught-up aggregation, and alerts would fire or hide.
        for gauge in (self.terminal_lag, self.scorer_event_time, self.terminal_event_time):
            gauge.set(math.nan)

        self.partition_stalled = Gauge(
            "fraudstream_partition_stalled",
            "1 while a partition assigned to this worker has records past its position "
            "and has not progressed for the stall time (partition_stall_after_s).",
            ["topic", "partition"],
            registry=r,
        )
        self.partition_stalls = Counter(
            "fraudstream_partition_stalls",
            "Partitions found stalled: a backlog and no progress for the stall time.",
            registry=r,
        )

        self.consumer_lag = Gauge(
            "fraudstream_consumer_lag_records",
            "Records of an assigned source partition past what this worker processed and "
            "committed: high watermark minus position, sampled every few seconds.",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_lag_seconds = Gauge(
            "fraudstream_consumer_lag_seconds",
            "How long ago the last record this worker took from an assigned source "
            "partition was produced, while the partition has a backlog (0 without one): "
            "the age of the backlog's head, sampled every few seconds.",
            ["topic", "partition"],
            registry=r,
        )
        self.rebalances = Counter(
            "fraudstream_rebalances",
            "Consumer-group rebalances this worker went through.",
            registry=r,
        )
        self.rebalance_duration = Histogram(
            "fraudstream_rebalance_duration_seconds",
            "From a rebalance's start (partitions revoked) to its end (tables recovered, "
            "streams resumed): time during which this worker processed nothing.",
            buckets=REBALANCE_BUCKETS,
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "fraudstream_assigned_partitions",
            "Source partitions assigned to this worker after the last rebalance, by topic.",
            ["topic"],
            registry=r,
        )
        self.table_entries = Gauge(
            "fraudstream_table_entries",
            "Table entries held in this worker's memory (the redis:// write-back cache, "
            "bounded by cache_entries; all entries of a memory:// table), by table.",
            ["table"],
            registry=r,
        )
        self.table_stored_entries = Gauge(
            "fraudstream_table_stored_entries",
            "Entries of this worker's table partitions in Redis at the last census "
            "(FRAUDSTREAM_TABLE_CENSUS_INTERVAL_S), by table; sum over workers.",
            ["table"],
            registry=r,
        )
        self.table_stored_bytes = Gauge(
            "fraudstream_table_stored_bytes",
            "Bytes (keys plus values) of this worker's table partitions in Redis at the "
            "last census, by table; sum over workers.",
            ["table"],
            registry=r,
        )
        self.table_census_seconds = Gauge(
            "fraudstream_table_census_seconds",
            "How long the last census of a table in Redis took (a SCAN), by table.",
            ["table"],
            registry=r,
        )
        self.redis_available = Gauge(
            "fraudstream_redis_available",
            "0 while the tables' Redis fails calls (the worker waits for it), 1 otherwise; "
            "NaN when no table is stored in Redis.",
            registry=r,
        )
        self.redis_available.set(math.nan)
        self.kafka_available = Gauge(
            "fraudstream_kafka_available",
            "0 while this process's Kafka clients fail to reach a broker (from the first "
            "connection error until none came for a few seconds), 1 otherwise.",
            registry=r,
        )
        self.kafka_available.set_function(lambda: 0.0 if OUTAGE_LOG.in_outage else 1.0)
        self.build_info = Gauge(
            "fraudstream_build_info",
            "1, labelled with the versions this worker runs.",
            ["version", "faust", "aiokafka", "python"],
            registry=r,
        )
        self.build_info.labels(**build_versions()).set(1)

        # Only read on a scrape, so free on the hot path.
        r.register(CONNECTION_ERRORS)  # process-wide: counted by streams.kafkalog's filter
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        PlatformCollector(registry=r)

        # Guards the read-compare-write updates below: Faust may serve the web in a
        # thread (web_in_thread) and agents may run in executors.
        self._lock = threading.Lock()
        self._model_version: str | None = None
        self._refused_version: str | None = None
        self._scorer_ms: int | None = None
        self._terminal_ms: int | None = None

    def set_model_version(self, version: str) -> None:
        """Make ``version`` the only series of ``fraudstream_model_info``.

        The new series is set before the old one is removed, so a scrape in between sees
        two versions for an instant rather than none.

        Args:
            version: The version of the model now active.
        """
        with self._lock:
            old = self._model_version
            self.model_info.labels(version=version).set(1)
            if old is not None and old != version:
                self.model_info.remove(old)
            self._model_version = version

    def set_model_fallback(self, refused_version: str | None) -> None:
        """Make ``refused_version`` the only series of ``fraudstream_model_fallback``.

        Args:
            refused_version: The newest promoted version, which did not load while an
                older one scores; None when the worker runs the newest promotion.
        """
        with self._lock:
            old = self._refused_version
            if refused_version is not None:
                self.model_fallback.labels(refused_version=refused_version).set(1)
            if old is not None and old != refused_version:
                self.model_fallback.remove(old)
            self._refused_version = refused_version

    def observe_event_times(
        self, *, scorer_ms: int | None = None, terminal_ms: int | None = None
    ) -> None:
        """Update the two event-time gauges (monotonic max) and the lag gauge.

        Event times are maxima because batches of different partitions interleave: an
        older batch processed after a newer one must not move the watermark back. Call
        once per batch with the batch's newest event time.

        Args:
            scorer_ms: Newest event time (epoch ms) of a batch just scored.
            terminal_ms: Newest event time (epoch ms) just applied to terminal state.
        """
        with self._lock:
            if scorer_ms is not None and (self._scorer_ms is None or scorer_ms > self._scorer_ms):
                self._scorer_ms = scorer_ms
                self.scorer_event_time.set(scorer_ms / 1000)
            if terminal_ms is not None and (
                self._terminal_ms is None or terminal_ms > self._terminal_ms
            ):
                self._terminal_ms = terminal_ms
                self.terminal_event_time.set(terminal_ms / 1000)
            if self._scorer_ms is not None and self._terminal_ms is not None:
                # Negative when the terminal aggregation is ahead of the scorer: fine.
                self.terminal_lag.set((self._scorer_ms - self._terminal_ms) / 1000)

    def render(self) -> tuple[bytes, str]:
        """Export the registry in the Prometheus text format.

        Returns:
            The body and its content type, ready for an HTTP response.
        """
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def build_versions() -> dict[str, str]:
    """The versions of fraudstream, faust-streaming, aiokafka and Python running here.

    What ``fraudstream_build_info`` carries, so a dashboard or an alert can tell which
    workers run which build during a rolling upgrade.
    """

    def installed(distribution: str) -> str:
        try:
            return package_version(distribution)
        except PackageNotFoundError:  # run from a source tree without installing
            return "unknown"

    return {
        "version": installed("fraudstream"),
        "faust": installed("faust-streaming"),
        "aiokafka": installed("aiokafka"),
        "python": platform.python_version(),
    }


async def watch_event_loop(histogram: Histogram, interval_s: float = 0.05) -> None:
    """Observe, forever, how late a timer of ``interval_s`` fires on the running loop.

    Run it as a task of the worker. A lag is time every event waiting on the loop also
    waited, whatever held it, so it separates stalls of the process from waits on Kafka.
    """
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        histogram.observe(max(0.0, loop.time() - started - interval_s))


class GcPauseObserver:
    """Times the collections of generations 1 and 2 into a histogram (``gc.callbacks``).

    A full collection walks every tracked object of the heap, holding the event loop
    for as long; with large caches that is a latency spike worth seeing.
    """

    def __init__(self, histogram: Histogram) -> None:
        self._children = {g: histogram.labels(generation=str(g)) for g in (1, 2)}
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """The ``gc.callbacks`` hook."""
        if info["generation"] == 0:
            return
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self._children[info["generation"]].observe(time.perf_counter() - self._started)
            self._started = None

    def install(self) -> None:
        """Start observing (once per process; a second install is ignored)."""
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        """Stop observing."""
        if self in gc.callbacks:
            gc.callbacks.remove(self)


def install_metrics_view(app: faust.App, metrics: PipelineMetrics, path: str = "/metrics") -> None:
    """Serve ``metrics.render()`` at ``GET path`` on a Faust app's own web server.

    For apps that run Faust's web server (benchmarks); the worker serves its metrics
    from its own threads instead (``streams.health``), and disables Faust's web server.
    Call it before the worker starts: aiohttp freezes its routes once the server runs.
    Installing twice on the same path raises, as aiohttp refuses a second GET route.

    Args:
        app: The Faust app whose web server (``web_host:web_port``) serves the page.
        metrics: The metrics of this worker.
        path: The URL path of the page.
    """

    async def metrics_page(view: Any, request: Any) -> Any:
        """Prometheus metrics of this worker."""
        body, content_type = metrics.render()
        # Passed as a header: aiohttp's content_type argument refuses parameters
        # (version, charset) and the Prometheus content type has both.
        return view.bytes(body, headers={"Content-Type": content_type})

    app.page(path, name=f"fraudstream-metrics:{path}")(metrics_page)
