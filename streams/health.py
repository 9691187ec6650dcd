"""Liveness, readiness and metrics pages of a worker, answered without its event loop.

The pages run in the web server's threads (``streams.webserver``) and read only what
the event loop publishes as plain attributes of immutable values (a float timestamp,
the active model, Faust's ``rebalancing`` flag, the stores' and Kafka clients' outage
timestamps) and prometheus-client's registry, which is thread-safe. So they answer in
milliseconds however long the loop is held, and they say why it is held.

**Liveness** (``/health``): 200, unless the event loop has not turned for
``loop_stuck_after_s`` (60 s by default) *and* no known dependency outage explains it.
A Redis outage holds the loop on purpose (the store waits for Redis rather than lose
state, ``streams.tablestore.backend``), and restarting the worker would not bring Redis
back, only add a rebalance to the outage: so while Redis or Kafka is known to be down,
the worker is alive. A loop silent for a minute with both up is a real hang (a deadlock,
a runaway computation): 503, and the orchestrator restarts the worker.

**Readiness** (``/ready``): 503 with the reason while Redis is unavailable ("redis
unavailable since ..."), Kafka is unreachable, the loop is stuck, no model is active or
a rebalance runs; 200 otherwise. Both bodies are JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from streams.kafkalog import OUTAGE_LOG, OutageLog
from streams.metrics import PipelineMetrics
from streams.tablestats import redis_down_since
from streams.webserver import Page, WebServer

#: How often the event loop marks that it turned.
HEARTBEAT_S: Final = 0.5

JSON: Final = "application/json"


class LoopHeartbeat:
    """The last time the event loop ran a callback, for a thread to read.

    A ``call_later`` chain on the loop (not a task of the app, so it runs from the
    loop's first turn, before Faust starts its services) writes ``last``, a float:
    another thread reads the whole value or the previous one, never a torn one.

    Args:
        interval_s: Time between two marks.
        clock: Monotonic seconds (a parameter for tests).
    """

    def __init__(
        self, interval_s: float = HEARTBEAT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        #: When the loop last turned; the creation time until it first does.
        self.last = clock()
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Mark from ``loop`` from now on (safe from any thread, before the loop runs)."""
        loop.call_soon_threadsafe(self._beat, loop)

    def stop(self) -> None:
        """Stop marking (from the loop's thread)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        self.last = self._clock()
        self._handle = loop.call_later(self.interval_s, self._beat, loop)

    def silent_for(self) -> float:
        """Seconds since the loop last turned."""
        return max(0.0, self._clock() - self.last)


class Outages:
    """When each known dependency became unavailable, or None while it answers.

    Redis: the first failed call of the tables' stores since their last success (their
    backends' backoff state, read only). Kafka: the process's connection-error outage
    (``streams.kafkalog``: from a client's first failure to reach a broker until none
    came for a few seconds).

    Args:
        stores: The tables' stores (any kind; those without Redis are skipped).
        kafka: The process's Kafka outage log.
        wall: Epoch seconds (for the "since" times people read).
        clock: Monotonic seconds, the clock of the outage states.
    """

    def __init__(
        self,
        stores: Iterable[Any],
        kafka: OutageLog = OUTAGE_LOG,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stores = list(stores)
        self.kafka = kafka
        self._wall = wall
        self._clock = clock

    def redis_down_since(self) -> float | None:
        """Epoch seconds of the start of the current Redis outage, or None."""
        starts = [s for s in map(redis_down_since, self.stores) if s is not None]
        return self._to_wall(min(starts)) if starts else None

    def kafka_down_since(self) -> float | None:
        """Epoch seconds of the start of the current Kafka outage, or None."""
        since = self.kafka.down_since
        return None if since is None else self._to_wall(since)

    def down(self) -> dict[str, float]:
        """The unavailable dependencies, with the epoch seconds they went down."""
        found = {"redis": self.redis_down_since(), "kafka": self.kafka_down_since()}
        return {name: since for name, since in found.items() if since is not None}

    def _to_wall(self, monotonic_s: float) -> float:
        return self._wall() - max(0.0, self._clock() - monotonic_s)


@dataclass(frozen=True)
class Verdict:
    """A probe's answer: its status and JSON body."""

    ok: bool
    body: dict[str, Any]

    def page(self) -> Page:
        """The HTTP response: 200 or 503, JSON."""
        return Page(200 if self.ok else 503, JSON, json.dumps(self.body).encode())


class WorkerHealth:
    """Liveness and readiness of one worker, computed in the web server's threads.

    Args:
        heartbeat: The event loop's heartbeat.
        outages: The dependencies' outage states.
        ready: None when the pipeline can score, else why not (one line); reads only
            attributes the loop publishes.
        details: More fields for the ``/ready`` body (the model version, a fallback).
        stuck_after_s: Loop silence that, unexplained by an outage, fails liveness.
        wall: Epoch seconds.
    """

    def __init__(
        self,
        heartbeat: LoopHeartbeat,
        outages: Outages,
        ready: Callable[[], str | None],
        details: Callable[[], dict[str, Any]] | None = None,
        stuck_after_s: float = 60.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.heartbeat = heartbeat
        self.outages = outages
        self.ready = ready
        self.details = details
        self.stuck_after_s = stuck_after_s
        self._wall = wall

    def liveness(self) -> Verdict:
        """Alive unless the loop is silent past the limit with no outage to explain it."""
        silent = self.heartbeat.silent_for()
        down = self.outages.down()
        body: dict[str, Any] = {"status": "ok", "event_loop_silent_s": round(silent, 3)}
        if down:
            body["waiting_on"] = sorted(down)
        if silent < self.stuck_after_s or down:
            return Verdict(True, body)
        body["status"] = "stuck"
        body["reason"] = (
            f"event loop has not turned for {silent:.0f} s and neither Redis nor Kafka is "
            "known to be down"
        )
        return Verdict(False, body)

    def readiness(self) -> Verdict:
        """Ready when every dependency answers, the loop turns and the pipeline can score."""
        extra = self.details() if self.details is not None else {}
        reason = self._not_ready()
        if reason is None:
            return Verdict(True, {"status": "ready", **extra})
        return Verdict(False, {"status": "not ready", "reason": reason, **extra})

    def _not_ready(self) -> str | None:
        now = self._wall()
        down = sorted(self.outages.down().items(), key=lambda item: item[1])
        if down:
            return "; ".join(
                f"{name} unavailable since {_iso(since)} ({now - since:.0f} s)"
                for name, since in down
            )
        silent = self.heartbeat.silent_for()
        if silent >= self.stuck_after_s:
            return f"event loop has not turned for {silent:.0f} s"
        return self.ready()


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


def install_pages(server: WebServer, health: WorkerHealth, metrics: PipelineMetrics) -> None:
    """Serve ``/health``, ``/ready`` and ``/metrics`` of a worker on ``server``."""

    def metrics_page() -> Page:
        body, content_type = metrics.render()
        return Page(200, content_type, body)

    server.route("/health", lambda: health.liveness().page())
    server.route("/ready", lambda: health.readiness().page())
    server.route("/metrics", metrics_page)
