"""A stream worker that counts events per key in a table: the subject of the crash tests.

Run as a script with FRAUDSTREAM_* variables naming the topic prefix, the app id and the
table store. Each event's value is its sequence number; the table keeps, per key, the
number of events and the sum of their sequence numbers, so a lost event or one applied
twice shows in either figure.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from streams.app import create_app
from streams.faustcompat import seek
from streams.settings import Settings

settings = Settings()
# Tests shorten Faust's commit interval to make the group's commits run ahead of Redis.
commit_interval = float(os.environ.get("COUNTING_APP_COMMIT_INTERVAL_S", "2.8"))
app = create_app(settings, web_enabled=False, broker_commit_interval=commit_interval)
events = app.topic(settings.topic("events"), key_type=str)  # values: JSON integers
totals = app.Table("totals", default=lambda: [0, 0], partitions=settings.topic_partitions)


#: Tests delay the seek that ends a rebalance's recovery by this long. Faust resumes the
#: source partitions just before it, so the worker's hold of the flow until that seek is
#: what keeps the fetch loop from handing records over meanwhile; a delay turns the loop
#: turn that the hold covers into seconds.
late_seek_s = float(os.environ.get("COUNTING_APP_LATE_SEEK_S", "0"))


def delay_recovery_seeks() -> None:
    """Wrap the consumer's seek (the store's wrapper inside) with the delay.

    Only the recovery's own call is delayed: it runs as a task of its own (Faust's
    ``Service._wait``), whereas the fetch loop's call (``Consumer.getmany`` with the flow
    stopped) runs in the fetch loop's task, which a delay would stop from fetching.
    """

    async def late(inner: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.current_task()
        if task is not None and getattr(task.get_coro(), "__name__", "") == "perform_seek":
            await asyncio.sleep(late_seek_s)
        await inner()

    seek.wrap_perform_seek(app.consumer, late)


@app.agent(events)
async def count(stream: Any) -> None:
    """Add each event to its key's count and sequence sum."""
    delayed = late_seek_s <= 0
    async for key, sequence in stream.items():
        if not delayed:  # the store wrapped the seek when it started
            delay_recovery_seeks()
            delayed = True
        count_, sum_ = totals[key]
        totals[key] = [count_ + 1, sum_ + sequence]


if __name__ == "__main__":
    faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
