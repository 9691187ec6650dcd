"""Scale-out: pipeline throughput of 1, 2 and 3 workers on a 3-broker Kafka cluster and a
3-master Redis Cluster.

Run: ``.venv/bin/python bench/bench_scale_out.py [--transactions N] [--workers 1,2,3]``.
bench_pipeline.py measures one worker, and two on two partitions, against the single
local broker and redis-server; this measures what adding workers buys on the topology a
deployment would scale out on: topics replicated three times over three brokers (every
write acknowledged by the in-sync replicas), feature tables spread over three Redis
masters. It reuses bench_pipeline's setup and measurement (imported, not copied), so the
numbers of both scripts are measured the same way:

0. The local clusters are started if they are not running (``LocalKafkaCluster``,
   ``LocalRedisCluster``: what ``fraudstream infra up --only kafka-cluster`` and ``--only
   redis-cluster`` start; ports from the settings or ``--kafka-cluster-port`` and
   ``--redis-cluster-port``) and left running at the end unless ``--stop-clusters``.
1. Setup (bench_pipeline's ``setup`` and ``preload``, not timed): a simulated dataset of
   about ``--transactions`` transactions, a logistic regression trained, registered and
   promoted in a temporary registry, and the whole dataset pre-loaded into input topics of
   ``--partitions`` partitions, replication factor 3, before any worker starts: the rates
   are the workers', not the producer's.
2. For each W of ``--workers``: W ``fraudstream worker`` processes (the default settings:
   no score records) with an app id, output topics and Redis key prefix of their own,
   reading the shared pre-loaded input topics from the start with their own consumer
   group (as bench_pipeline's phases do). bench_pipeline's ``measure`` polls every
   worker's ``/metrics``; the steady rate is the transactions scored by all of them
   between the sample where every worker has scored (after the group's rebalances) and at
   least 10 % are scored, and the sample at 90 %. Also: the workers' CPU per transaction,
   and the CPU of the three brokers, of the three redis-servers and of the whole machine
   (/proc/stat) in that window, and the load average before and after.
3. A table: workers, steady rate, speed-up over one worker, CPU per transaction, CPU by
   process group in cores, the machine's busy share of its cores, load; then what limits
   the rate, from those numbers (the CPU the pipeline's processes spend per transaction
   and what the machine's cores can carry at that cost).

Everything the run creates (topics and consumer groups on the Kafka cluster, keys on the
Redis Cluster, worker data, the dataset and registry) is deleted at the end, even on
failure or Ctrl-C, unless ``--keep`` (bench_pipeline's ``cleanup``); worker logs stay in
the temporary directory the run names.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from bench_pipeline import (
    Bench,
    Throughput,
    cleanup,
    code_state,
    describe,
    free_port,
    load,
    measure,
    preload,
    process_cpu_s,
    settings_used,
    setup,
    stop_all,
    stop_on_signals,
)

from streams.kafka import client_options
from streams.localinfra import LocalKafkaCluster, LocalRedisCluster, ServiceError
from streams.settings import Settings

#: Replicas of every topic on the three-broker cluster.
REPLICATION = 3

#: The machine's cores count as saturated from this busy share on (the rest is the
#: scheduler's slack and the poll's granularity).
SATURATED = 0.85


def machine_cpu_s() -> tuple[float, float] | None:
    """CPU seconds the machine's cores were busy so far (user, nice, system, irq, softirq),
    and stolen by the hypervisor (steal), from /proc/stat; None if unreadable."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def summed_cpu_s(pids: list[int]) -> float | None:
    """CPU seconds of the processes added up; None if none of them runs."""
    values = [v for pid in pids if (v := process_cpu_s(pid)) is not None]
    return sum(values) if values else None


@dataclass
class ScaleBench(Bench):
    """bench_pipeline's run state, with the clusters' processes as its services."""

    broker_pids: list[int] = field(default_factory=list)
    redis_pids: list[int] = field(default_factory=list)
    clusters_line: str = ""
    layout: str = ""
    #: ``service_cpu``'s entries in cores with no worker running (after the pre-load).
    idle: dict[str, float] = field(default_factory=dict)

    def service_cpu(self) -> dict[str, float | None]:
        """CPU seconds so far of the brokers, the redis-servers and the whole machine:
        ``measure`` turns them into shares of the steady window."""
        machine = machine_cpu_s()
        return {
            "brokers": summed_cpu_s(self.broker_pids),
            "redis-servers": summed_cpu_s(self.redis_pids),
            "machine": machine[0] if machine else None,
            "steal": machine[1] if machine else None,
        }


@dataclass(frozen=True)
class Clusters:
    """The local clusters the run uses, and whether this run started them."""

    kafka: LocalKafkaCluster
    redis: LocalRedisCluster
    started: str

    def settings(self, partitions: int) -> Settings:
        """The default settings pointed at both clusters (as
        tests/integration/pipeline/test_pipeline_clusters.py does)."""
        return self.kafka.client_settings().model_copy(
            update={
                "topic_replication_factor": REPLICATION,
                "topic_partitions": partitions,
                "table_store": self.redis.store_url,
                "redis_password": self.redis.settings.redis_password,
            }
        )


def start_clusters(args: argparse.Namespace) -> Clusters:
    """Start the local Kafka cluster and Redis Cluster unless they run (idempotent)."""
    ports: dict[str, Any] = {}
    if args.kafka_cluster_port:
        ports["local_kafka_cluster_port"] = args.kafka_cluster_port
    if args.redis_cluster_port:
        ports["local_redis_cluster_port"] = args.redis_cluster_port
    local = Settings(**ports)
    kafka, redis_cluster = LocalKafkaCluster(local), LocalRedisCluster(local)
    said = []
    for service in (kafka, redis_cluster):
        began = time.monotonic()
        said.append(f"{service.start()} ({time.monotonic() - began:.0f} s)")
        print(said[-1])
    return Clusters(kafka, redis_cluster, "; ".join(said))


async def topic_layout(settings: Settings, topic: str) -> str:
    """Partitions, replicas and leaders of a topic, as the cluster's metadata has them."""
    admin = AIOKafkaAdminClient(request_timeout_ms=15_000, **client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    parts = described[0]["partitions"]
    replicas = sorted({len(p["replicas"]) for p in parts})
    in_sync = sorted({len(p["isr"]) for p in parts})
    leaders = sorted(p["leader"] for p in parts)
    return (
        f"{len(parts)} partitions, {'/'.join(map(str, replicas))} replicas "
        f"({'/'.join(map(str, in_sync))} in sync), leaders on brokers "
        f"{', '.join(map(str, leaders))}"
    )


async def idle_cpu(bench: ScaleBench, seconds: float) -> dict[str, float]:
    """The services' and the machine's CPU, in cores, over ``seconds`` with no worker:
    the clusters' own upkeep (KRaft, replica fetchers, cluster bus) and the other jobs."""
    before, began = bench.service_cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    after, took = bench.service_cpu(), time.monotonic() - began
    return {name: ((after[name] or 0.0) - (b or 0.0)) / took for name, b in before.items()}


def cores_line(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.2f}" for name, share in shares.items())


async def run_workers(bench: ScaleBench, count: int, data: str) -> Throughput:
    """``count`` pipeline workers of one app (one consumer group) on the pre-loaded data."""
    variant = f"w{count}"
    settings = bench.settings(variant, data, bench.args.partitions)
    workers = [
        bench.pipeline_worker(
            f"{variant}-{i + 1}",
            settings if i == 0 else settings.model_copy(update={"web_port": free_port()}),
        )
        for i in range(count)
    ]
    label = f"{count} worker{'s' if count > 1 else ''}"
    try:
        result = await measure(bench, label, workers, bench.transactions, all_active=True)
    finally:
        await stop_all(workers)
    print(describe(result))
    return result


# -- the summary ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cpu:
    """CPU of the process groups in a phase's steady window, in cores (s per s)."""

    workers: float
    brokers: float
    redis: float
    machine: float
    steal: float

    @classmethod
    def of(cls, t: Throughput) -> Cpu:
        s = t.service_shares
        return cls(
            t.cpu_share,
            s.get("brokers", 0.0),
            s.get("redis-servers", 0.0),
            s.get("machine", 0.0),
            s.get("steal", 0.0),
        )

    @property
    def pipeline(self) -> float:
        """Workers, brokers and redis-servers: the pipeline's own processes."""
        return self.workers + self.brokers + self.redis

    @property
    def other(self) -> float:
        """Everything else that ran: this process, the default broker and redis-server
        (idle), other jobs on the machine."""
        return max(0.0, self.machine - self.pipeline)


def mean_batch(t: Throughput) -> float:
    """Transactions per micro-batch over the whole phase, all workers."""
    batches = sum(m.get("fraudstream_batch_size_count", 0.0) for m in t.final)
    return sum(m.get("fraudstream_batch_size_sum", 0.0) for m in t.final) / max(batches, 1.0)


def us_per_tx(cores: float, rate: float) -> float:
    return cores / rate * 1e6 if rate else float("nan")


def limit_lines(results: dict[int, Throughput], cores: int, idle: dict[str, float]) -> list[str]:
    """What limits the rate, said from the measured CPU of the most workers' phase."""
    most = max(results)
    t = results[most]
    cpu = Cpu.of(t)
    cost = us_per_tx(cpu.pipeline, t.steady_rate)
    ceiling = cores * 1e6 / cost if cost else float("nan")
    busy = cpu.machine / cores
    idle_line = ""
    if idle:
        idle_line = (
            f" (with no worker: brokers {idle.get('brokers', 0.0):.2f}, redis-servers "
            f"{idle.get('redis-servers', 0.0):.2f}, machine {idle.get('machine', 0.0):.2f})"
        )
    lines = [
        f"limit, with {most} worker{'s' if most > 1 else ''}: the machine's {cores} cores were "
        f"busy {cpu.machine:.2f} cores ({busy:.0%}) in the steady window: workers "
        f"{cpu.workers:.2f}, {REPLICATION} brokers {cpu.brokers:.2f}, {REPLICATION} "
        f"redis-servers {cpu.redis:.2f}, everything else {cpu.other:.2f} (this process, the "
        f"default broker and redis-server, other jobs){idle_line}"
        + (f"; {cpu.steal:.2f} stolen by the hypervisor" if cpu.steal >= 0.05 else "")
        + ".",
        f"  The pipeline's processes spent {cost:,.0f} us of CPU per transaction (workers "
        f"{us_per_tx(cpu.workers, t.steady_rate):,.0f}, brokers "
        f"{us_per_tx(cpu.brokers, t.steady_rate):,.0f}, redis-servers "
        f"{us_per_tx(cpu.redis, t.steady_rate):,.0f}): at that cost {cores} cores carry at "
        f"most ~{ceiling:,.0f} tx/s with nothing else running.",
    ]
    for count, r in sorted(results.items()):
        c = Cpu.of(r)
        if c.machine / cores >= SATURATED:
            why = f"the machine's cores saturated ({c.machine / cores:.0%})"
        elif c.workers / count >= SATURATED:
            why = (
                f"each worker busy its one core ({c.workers / count:.2f}: a worker is one "
                f"Python process), the machine at {c.machine / cores:.0%}"
            )
        else:
            why = (
                f"neither the workers ({c.workers / count:.2f} core each) nor the machine "
                f"({c.machine / cores:.0%}) busy: waits (Kafka, Redis, rebalances)"
            )
        lines.append(f"  {count} worker{'s' if count > 1 else ''}: {why}")
    one = results.get(1)
    if busy >= SATURATED:
        lines.append(
            f"  -> CPU-bound: the cores are saturated; the {most} workers, the {REPLICATION} "
            f"JVM brokers and the {REPLICATION} redis-servers share the same {cores} cores, "
            f"and the workers got {cpu.workers:.2f} of them ({cpu.workers / most:.2f} each): "
            "a worker added divides the cores, it does not add any."
        )
        if one is not None and most > 1:
            one_cpu = Cpu.of(one)
            lines.append(
                f"  Rate = the workers' cores / their CPU per transaction: 1 worker "
                f"{one_cpu.workers:.2f} cores / {one.cpu_us:,.0f} us = "
                f"{one_cpu.workers / one.cpu_us * 1e6:,.0f} tx/s; {most} workers "
                f"{cpu.workers:.2f} / {t.cpu_us:,.0f} us = {cpu.workers / t.cpu_us * 1e6:,.0f} "
                f"tx/s (worker CPU per transaction {t.cpu_us / one.cpu_us - 1:+.0%}, while "
                f"the mean batch went from {mean_batch(one):.0f} to {mean_batch(t):.0f} "
                "transactions: per-batch costs spread over fewer): "
                f"speed-up {t.steady_rate / one.steady_rate:.2f}x. Scale-out needs cores "
                "(machines), not processes."
            )
    else:
        lines.append(
            f"  -> the cores were not saturated ({busy:.0%} < {SATURATED:.0%}): the limit "
            "is not CPU alone (waits on Kafka or Redis round trips, rebalances, or a "
            "partition skew: see the per-worker rates)."
        )
    if cpu.other >= 0.2:
        lines.append(
            f"  Other work took {cpu.other:.2f} cores meanwhile: on a quiet machine the "
            "pipeline would get them too."
        )
    return lines


def summary(bench: ScaleBench, results: dict[int, Throughput], load_start: str) -> str:
    args = bench.args
    cores = os.cpu_count() or 1
    took = time.monotonic() - bench.started
    one = results.get(1)
    out = [
        "",
        f"=== bench_scale_out summary: run {bench.run}, {cores} CPUs, took {took / 60:.1f} min ===",
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}",
        f"code: {bench.code_at_start}"
        + (f"; at the end: {code}" if (code := code_state()) != bench.code_at_start else ""),
        f"clusters: {bench.clusters_line}",
        f"input topics: {bench.layout or '?'}",
        f"data: {bench.transactions:,} transactions ({args.transactions:,} asked, {args.days} "
        f"days), pre-loaded once before the first worker started; model {bench.model_line}",
        settings_used(bench),
        "",
        f"{'':>7}{'--- transactions/s ---':>31}{'':>6}{'-- CPU us/tx --':>17}"
        f"{'------ CPU in the steady window, cores ------':>48}",
        f"{'workers':>7}{'steady':>10}{'speed-up':>10}{'all agents':>11}{'batch':>6}"
        f"{'workers':>9}"
        f"{'all':>8}{'workers':>9}{'brokers':>9}{'redis':>7}{'other':>7}{'machine':>16}"
        "   load 1/5/15 min before -> after",
    ]
    for count, t in sorted(results.items()):
        cpu = Cpu.of(t)
        speed = f"{t.steady_rate / one.steady_rate:.2f}x" if one else "-"
        all_agents = f"{t.all_agents_rate:,.0f}" if t.all_agents_rate else "not done"
        machine = f"{cpu.machine:.2f} ({cpu.machine / cores:.0%})"
        out.append(
            f"{count:>7}{t.steady_rate:>10,.0f}{speed:>10}{all_agents:>11}"
            f"{mean_batch(t):>6.0f}{t.cpu_us:>9,.0f}"
            f"{us_per_tx(cpu.pipeline, t.steady_rate):>8,.0f}{cpu.workers:>9.2f}"
            f"{cpu.brokers:>9.2f}{cpu.redis:>7.2f}{cpu.other:>7.2f}{machine:>16}   "
            f"{t.load_before} -> {t.load_after}"
        )
    out.append(
        "  steady: transactions scored by all the workers between the /metrics sample where "
        "every worker has scored and >= 10 % are, and the sample at 90 %;"
        "\n  all agents: first scored -> the terminal agent done with the last forward;"
        "\n  batch: mean transactions per micro-batch (all workers, the whole phase);"
        "\n  CPU us/tx: workers, and all = workers + brokers + redis-servers, per transaction "
        "in the steady window;"
        f"\n  cores: CPU seconds per second (the machine has {cores}); machine: /proc/stat "
        "busy time (share of all cores); other = machine - workers - brokers - redis"
    )
    if bench.idle:
        out.append(
            f"  with no worker ({args.idle_seconds:.0f} s after the pre-load), cores: "
            f"{cores_line(bench.idle)}"
        )
    for count, t in sorted(results.items()):
        out.append(
            f"  {count} worker(s): window {t.window}"
            + (f"; per worker: {t.per_worker}" if t.per_worker else "")
        )
    if results:
        out += ["", *limit_lines(results, cores, bench.idle)]
    out.append(f"load average: at start {load_start}, at the end {load()}")
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, clusters: Clusters) -> None:
    base = clusters.settings(args.partitions)
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    bench = ScaleBench(
        args,
        base,
        run,
        tmp,
        broker_pids=[p for n in clusters.kafka.nodes if (p := n.process.pid()) is not None],
        redis_pids=[p for n in clusters.redis.nodes if (p := n.process.pid()) is not None],
    )
    bench.clusters_line = (
        f"Kafka {clusters.kafka.address} ({len(bench.broker_pids)} brokers running, heap "
        f"{base.local_kafka_cluster_heap} each), Redis Cluster {clusters.redis.address} "
        f"({len(bench.redis_pids)} masters running), table store {clusters.redis.store_url}; "
        f"{clusters.started}"
    )
    bench.logs.mkdir()
    stop_on_signals()
    load_start = load()
    bench.code_at_start = code_state()
    print(f"run {run}; {bench.code_at_start}; {os.cpu_count()} CPUs; load {load_start}")
    print(f"logs in {bench.logs}")
    results: dict[int, Throughput] = {}
    data = f"d{args.partitions}"
    try:
        await setup(bench)
        await preload(bench, data, args.partitions)
        transactions = bench.settings("layout", data, args.partitions).topic_names["transactions"]
        bench.layout = await topic_layout(base, transactions)
        print(f"setup: {transactions}: {bench.layout}")
        if args.idle_seconds > 0:
            bench.idle = await idle_cpu(bench, args.idle_seconds)
            print(
                f"setup: CPU with no worker, {args.idle_seconds:.0f} s, cores: "
                f"{cores_line(bench.idle)}; load {load()}"
            )
        for count in args.workers:
            print(f"\n{count} worker(s), {args.partitions} partitions; load {load()}")
            results[count] = await run_workers(bench, count, data)
    finally:
        await cleanup(bench)
        print(summary(bench, results, load_start))


def worker_counts(text: str) -> list[int]:
    """``--workers``: comma-separated positive numbers of workers."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"need numbers of workers >= 1: {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--transactions", type=int, default=200_000, help="dataset size (approximate)"
    )
    parser.add_argument("--days", type=int, default=60, help="days of the simulated dataset")
    parser.add_argument(
        "--workers", type=worker_counts, default=[1, 2, 3], help="worker counts (1,2,3)"
    )
    parser.add_argument("--partitions", type=int, default=6, help="partitions of every topic")
    parser.add_argument("--alert-budget", type=float, default=100.0, help="train's alerts/day")
    parser.add_argument(
        "--kafka-cluster-port",
        type=int,
        default=None,
        help="first port of the local Kafka cluster (default: the settings')",
    )
    parser.add_argument(
        "--redis-cluster-port",
        type=int,
        default=None,
        help="first port of the local Redis Cluster (default: the settings')",
    )
    parser.add_argument(
        "--stop-clusters", action="store_true", help="stop both clusters at the end"
    )
    parser.add_argument("--keep", action="store_true", help="do not delete topics, keys, files")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="CPU of the clusters and the machine measured this long before the workers",
    )
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between /metrics")
    parser.add_argument(
        "--stall-timeout", type=float, default=120.0, help="give up after no progress this long"
    )
    args = parser.parse_args()
    if max(args.workers) > args.partitions:
        parser.error(f"--workers {max(args.workers)} > --partitions {args.partitions}: idle")
    try:
        clusters = start_clusters(args)
    except ServiceError as exc:
        sys.exit(f"bench_scale_out: the local clusters did not start: {exc}")
    try:
        asyncio.run(main_async(args, clusters))
    except asyncio.CancelledError:
        sys.exit("interrupted (cleaned up)")
    finally:
        if args.stop_clusters:
            print(clusters.kafka.stop())
            print(clusters.redis.stop())
        else:
            print(
                "clusters left running (`fraudstream infra down --only kafka-cluster`, "
                "`--only redis-cluster` stop them)"
            )


if __name__ == "__main__":
    main()
