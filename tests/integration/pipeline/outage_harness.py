"""A dependency taken down under a worker scoring a paced replay, its pages polled throughout.

Shared by the broker-outage and Redis-outage tests: one worker scores a replay sent at
a fixed rate; once it has scored some of it, a thread asks /health, /ready and /metrics
every half second while the test takes the dependency down, keeps it down, and brings
it back; then the replay ends, every transaction is applied, and the worker stops with
code 0. `assert_pages_answered` checks what both tests require of the pages meanwhile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from pipeline_harness import Poller, Scenario, Workers, replay, sample, wait_until_applied

#: Longest /ready may take to answer 200 once the dependency is back.
READY_AGAIN_S = 60.0


@dataclass(frozen=True)
class Outage:
    """What happened (monotonic times) and every answer of the worker's pages."""

    poller: Poller
    down_at: float
    up_at: float
    #: When the dependency's start returned: it answers again.
    back_at: float
    #: When /ready first answered 200 after the outage.
    ready_again: float


@dataclass(frozen=True)
class OutagePlan:
    """How the replay runs, when the dependency goes down, and what the pages must say."""

    #: Seconds the worker may take to notice the dependency is gone.
    notice_s: float
    #: What /ready's reason says meanwhile, and the gauge that reads 0.
    reason: str
    gauge: str
    rate: int
    scored_before: int
    scored_timeout_s: float
    settle_s: float
    outage_s: float
    replay_timeout_s: float


def run_outage(
    case: Scenario,
    tmp_path: Path,
    free_port: Callable[[], int],
    plan: OutagePlan,
    take_down: Callable[[], object],
    bring_up: Callable[[], object],
) -> Outage:
    """Run one worker through the outage; return once it applied everything and stopped.

    Its pages answered as `assert_pages_answered` requires.
    """
    settings, transactions = case.settings, case.transactions
    client = redis.Redis.from_url(settings.redis_url)
    workers = Workers(settings, tmp_path, free_port)
    _, port = workers.start()
    try:
        workers.wait_ready(port)
        sender = replay(settings, case.path, "--rate", str(plan.rate))
        workers.wait_for_metric(
            port, "fraudstream_transactions_total", plan.scored_before, plan.scored_timeout_s
        )
        with Poller(port) as poller:
            time.sleep(plan.settle_s)
            assert sender.poll() is None, "the replay ended before the outage: slow it down"
            down_at = time.monotonic()
            take_down()
            time.sleep(plan.outage_s)
            up_at = time.monotonic()
            bring_up()
            back_at = time.monotonic()
            deadline = back_at + READY_AGAIN_S
            while not any(a.status == 200 for a in poller.of("/ready", start=up_at)):
                assert time.monotonic() < deadline, "/ready never turned 200 after the outage"
                time.sleep(0.5)
            time.sleep(2)
        output, _ = sender.communicate(timeout=plan.replay_timeout_s)
        assert sender.returncode == 0, output.decode()
        wait_until_applied(settings, client, transactions)
    finally:
        codes = workers.stop_all()
        client.close()
    assert codes == [0], workers.log()
    assert all(a.status == 200 for a in poller.of("/health")), workers.log()
    ready_again = assert_pages_answered(poller, down_at, up_at, plan)
    return Outage(poller, down_at, up_at, back_at, ready_again)


def assert_pages_answered(poller: Poller, down_at: float, up_at: float, plan: OutagePlan) -> float:
    """Every page answered within a second; /ready and the plan's gauge said the outage.

    /health and /metrics answered 200 throughout; /ready answered 503 with the plan's
    reason from ``notice_s`` after the dependency went down until it was back, and the
    gauge read 0 meanwhile and 1 once /ready was 200 again.

    Returns:
        When /ready first answered 200 after the outage (monotonic).
    """
    notice_s, reason, gauge = plan.notice_s, plan.reason, plan.gauge
    slow = [a for a in poller.answers if a.status is None or a.seconds >= 1.0]
    assert slow == [], slow[:5]
    assert all(a.status == 200 for a in poller.of("/metrics"))
    during = poller.of("/ready", start=down_at + notice_s, end=up_at)
    assert during
    assert all(a.status == 503 for a in during), during
    assert all(reason in json.loads(a.body)["reason"] for a in during)
    metrics = poller.of("/metrics", down_at + notice_s, up_at)
    assert {sample(a, gauge) for a in metrics} == {0.0}
    ready_again = min(a.at for a in poller.of("/ready", start=up_at) if a.status == 200)
    assert sample(poller.of("/metrics", start=ready_again)[-1], gauge) == 1.0
    return ready_again


def summary(outage: Outage, what: str) -> str:
    """One line for the test's output: how the pages and /ready behaved."""
    poller, down_at, ready_again = outage.poller, outage.down_at, outage.ready_again
    unready = [a for a in poller.of("/ready") if a.status == 503]
    during = sorted(a.seconds for a in poller.answers if down_at <= a.at <= outage.up_at)
    silence = max(json.loads(a.body)["event_loop_silent_s"] for a in poller.of("/health"))
    return (
        f"{len(poller.answers)} answers, {len(during)} during a "
        f"{outage.up_at - down_at:.0f} s {what} outage: slowest {during[-1] * 1000:.1f} ms, "
        f"median {during[len(during) // 2] * 1000:.1f} ms; /ready 503 from "
        f"{min(a.at for a in unready) - down_at:+.1f} s to "
        f"{max(a.at for a in unready) - down_at:+.1f} s after it went down; back "
        f"{outage.back_at - outage.up_at:.1f} s after its restart began, /ready 200 "
        f"{ready_again - outage.back_at:.1f} s after that; max event loop silence {silence:.1f} s"
    )
