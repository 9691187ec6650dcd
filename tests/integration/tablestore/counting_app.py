"""A stream worker that counts events per key in a table: the subject of the crash tests.

Run as a script with FRAUDSTREAM_* variables naming the topic prefix, the app id and the
table store. Each event's value is its sequence number; the table keeps, per key, the
number of events and the sum of their sequence numbers, so a lost event or one applied
twice shows in either figure.
"""

from __future__ import annotations

import os
from typing import Any

import faust

from streams.app import create_app
from streams.settings import Settings

settings = Settings()
# Tests shorten Faust's commit interval to make the group's commits run ahead of Redis.
commit_interval = float(os.environ.get("COUNTING_APP_COMMIT_INTERVAL_S", "2.8"))
app = create_app(settings, web_enabled=False, broker_commit_interval=commit_interval)
events = app.topic(settings.topic("events"), key_type=str)  # values: JSON integers
totals = app.Table("totals", default=lambda: [0, 0], partitions=settings.topic_partitions)


@app.agent(events)
async def count(stream: Any) -> None:
    """Add each event to its key's count and sequence sum."""
    async for key, sequence in stream.items():
        count_, sum_ = totals[key]
        totals[key] = [count_ + 1, sum_ + sequence]


if __name__ == "__main__":
    faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
