"""The worker process of bench_table_store.py: one Faust agent, one table update per event.

Not run by hand: the benchmark starts it with the FRAUDSTREAM_* variables of one variant
(app id, topic prefix, table store, Redis namespace, partitions) and these:

- ``BENCH_SOURCE_TOPIC``: the pre-produced topic(s) to read, comma-separated (keys: raw
  strings, values: JSON integers). Passed explicitly so that every variant reads the very
  same events.
- ``BENCH_TABLE``: ``1``: ``counts[key] += 1`` on a table (the store is the app's default,
  FRAUDSTREAM_TABLE_STORE); ``0``: no table at all, the agent does ``local[key] += 1`` on a
  plain dict (the same work minus the table).
- ``BENCH_EXPECTED``: after this many events, report ``done`` and the table's check sums.
- ``BENCH_REPORT_EVERY``: a progress line every this many events.
- ``BENCH_PROFILE``: a file name: cProfile the event-loop thread from the first event to
  ``done`` and dump the stats there (the numbers of a profiled run are not benchmarks).
- ``BENCH_LOGLEVEL``: Faust's log level (default warn; info shows recovery progress).
- ``BENCH_TRACE``: ``1``: report the duration of the consumer's seek and commit calls
  after an assignment (where a restart's "recovered -> ready" time goes).
- ``BENCH_SWITCH_INTERVAL``: an experiment: ``sys.setswitchinterval`` for the process.

It reports on stdout, one line per fact, ``BENCH <what> <monotonic s> <process CPU s>
[details]``. time.monotonic() is CLOCK_MONOTONIC, shared by every process of the machine,
so the benchmark compares it with its own clock.
"""

from __future__ import annotations

import time

STARTED_AT = time.monotonic()  # before the imports: they are part of the start-up cost

import cProfile  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from typing import Any  # noqa: E402

import faust  # noqa: E402
from mode.types.signals import BaseSignalT  # noqa: E402

import streams  # noqa: E402
from streams.app import create_app  # noqa: E402
from streams.faustcompat import commit as group_commit  # noqa: E402
from streams.settings import Settings  # noqa: E402

SOURCE_TOPICS = os.environ["BENCH_SOURCE_TOPIC"].split(",")
WITH_TABLE = os.environ.get("BENCH_TABLE", "1") == "1"
EXPECTED = int(os.environ.get("BENCH_EXPECTED", "0"))
REPORT_EVERY = int(os.environ.get("BENCH_REPORT_EVERY", "10000"))
PROFILE_TO = os.environ.get("BENCH_PROFILE", "")
LOGLEVEL = os.environ.get("BENCH_LOGLEVEL", "warn")
TRACE = os.environ.get("BENCH_TRACE", "") == "1"
if os.environ.get("BENCH_SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))


def report(what: str, *details: object, at: float | None = None) -> None:
    """One line for the benchmark: what, when (monotonic), the process's CPU so far."""
    when = time.monotonic() if at is None else at
    text = " ".join(str(d) for d in details)
    # Straight to file descriptor 1: Faust's worker redirects sys.stdout to its logger.
    os.write(1, f"BENCH {what} {when:.6f} {time.process_time():.6f} {text}\n".encode())


report("start", at=STARTED_AT)
settings = Settings()
app = create_app(settings, web_enabled=False)
events = app.topic(*SOURCE_TOPICS, key_type=str)
counts = (
    app.Table("counts", default=int, partitions=settings.topic_partitions) if WITH_TABLE else None
)
report("imported", os.path.dirname(os.path.dirname(streams.__file__)))


def _traced(name: str, call: Any) -> Any:
    """``call`` (a coroutine function), reporting how long each call takes."""

    async def traced(*args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            return await call(*args, **kwargs)
        finally:
            report("trace", name, f"{time.monotonic() - began:.4f}")

    return traced


_traced_consumers: set[int] = set()


@app.on_partitions_assigned.connect
async def _assigned(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any) -> None:
    report("assigned")
    consumer: Any = app.consumer
    if TRACE and id(consumer) not in _traced_consumers:
        _traced_consumers.add(id(consumer))
        # Instance attributes, looked up at call time by Faust and by the store's wrapper.
        for name in ("perform_seek", "seek_wait", "earliest_offsets"):
            setattr(consumer, name, _traced(name, getattr(consumer, name)))
        # The store's commit of the offsets Redis holds, looked up at call time too.
        group_commit.commit_offsets = _traced("commit", group_commit.commit_offsets)


@app.on_rebalance_complete.connect
async def _recovered(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any) -> None:
    report("recovered")


_rebalance_end = app.on_rebalance_end


def _ready() -> None:
    """Faust's "Worker ready": recovery done, partitions resumed, the fetcher running."""
    _rebalance_end()
    report("ready")


app.on_rebalance_end = _ready  # type: ignore[method-assign]  # a hook: Faust has no signal


class Progress:
    """Counts processed events, reports progress, profiles when asked."""

    def __init__(self) -> None:
        self.processed = 0
        self.profiler: cProfile.Profile | None = None

    def first(self, key: str) -> None:
        report("first", key)
        if PROFILE_TO:
            self.profiler = cProfile.Profile()
            self.profiler.enable()

    def done(self) -> None:
        report("done", self.processed)
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(PROFILE_TO)
            self.profiler = None
        # Check sums, outside the timed window: distinct keys and the sum of the counts.
        values = list(counts.values()) if counts is not None else list(local.values())
        report("check", len(values), sum(values))


progress = Progress()
local: defaultdict[str, int] = defaultdict(int)


@app.agent(events)
async def count(stream: Any) -> None:
    """One table update per event (or one dict update, without a table)."""
    async for key, _value in stream.items():
        if counts is not None:
            counts[key] += 1
        else:
            local[key] += 1
        progress.processed += 1
        n = progress.processed
        if n == 1:
            progress.first(key)
        if n % REPORT_EVERY == 0:
            report("event", n)
        if n == EXPECTED:
            progress.done()


if __name__ == "__main__":
    faust.Worker(app, loglevel=LOGLEVEL, quiet=True).execute_from_commandline()
