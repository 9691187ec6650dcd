"""The demo's own names: every run gets fresh topics, consumer group and Redis keys.

A demo run replays its dataset into Kafka and builds window state in Redis. A second run
on the same names would find the first run's transactions in the topics (the new worker
reads them from the start) and its state in Redis (the same transactions counted twice),
and summarise nonsense. So each run names everything after a run id, under prefixes only
demos use, and cleans up: the previous runs' topics and keys when it starts (a run left
with ``--keep-running`` is explored until the next demo), its own when it ends.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka import client_options
from streams.redisclient import connect_tables, delete_keys
from streams.settings import Settings

#: What every demo topic name, app id and Redis key namespace starts with (after the
#: configured prefixes): nothing else uses it, so cleaning it up removes demo data only.
DEMO_MARK = "demo-"


@dataclass(frozen=True)
class DemoRun:
    """One demo run's settings and how to clean its data up.

    Attributes:
        settings: The configured settings with the run's own names.
        base: The configured settings the run derives from.
    """

    settings: Settings
    base: Settings

    @classmethod
    def new(cls, base: Settings) -> DemoRun:
        """A run with a fresh id: topics ``<prefix>demo-<id>-*``, app id, key namespace."""
        run = f"{DEMO_MARK}{uuid.uuid4().hex[:8]}"
        settings = base.model_copy(
            update={
                "topic_prefix": f"{base.topic_prefix}{run}-",
                "app_id": f"{base.app_id}-{run}",
                "redis_key_prefix": f"{base.redis_key_prefix}:{run}",
            }
        )
        return cls(settings, base)

    @property
    def topic_prefix(self) -> str:
        """The prefix of this run's topics."""
        return self.settings.topic_prefix

    def _demo_topic(self, name: str) -> bool:
        """Topics of any demo run: named by the product prefix or by a demo's app id."""
        return name.startswith(f"{self.base.topic_prefix}{DEMO_MARK}") or name.startswith(
            f"{self.base.app_id}-{DEMO_MARK}"
        )

    def clean(self, *, others_only: bool) -> tuple[int, int]:
        """Delete demo topics and Redis keys: earlier runs' only, or this run's too.

        Returns:
            How many topics and Redis keys were deleted.
        """
        mine = (self.topic_prefix, f"{self.settings.app_id}-")

        def wanted(topic: str) -> bool:
            return self._demo_topic(topic) and not (others_only and topic.startswith(mine))

        topics = asyncio.run(_delete_topics(self.base, wanted))
        pattern = f"{self.base.redis_key_prefix}:{DEMO_MARK}*"
        keep = f"{self.settings.redis_key_prefix}:" if others_only else None
        keys = _delete_keys(self.base, pattern, keep)
        return topics, keys


async def _delete_topics(settings: Settings, wanted: object) -> int:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if wanted(t)]  # type: ignore[operator]
        if names:
            await admin.delete_topics(names)
        return len(names)
    finally:
        await admin.close()


def _delete_keys(settings: Settings, pattern: str, keep: str | None) -> int:
    client = connect_tables(settings)
    try:
        return delete_keys(client, pattern, keep_prefix=None if keep is None else keep.encode())
    finally:
        client.close()
