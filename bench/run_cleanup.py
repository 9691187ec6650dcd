"""What the benchmarks share to clean up after a run: its topics, groups and Redis keys.

Each benchmark run names everything it creates after its own prefix; these delete them,
retrying a few times, since a broker or Redis may be briefly away at the end of a run
(the table store benchmark restarts them on purpose).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.faustcompat.groups import delete_consumer_groups
from streams.kafka import client_options
from streams.redisclient import connect_tables, delete_keys
from streams.settings import Settings


async def retrying(what: str, call: Callable[[], Awaitable[None]]) -> None:
    """Run a cleanup step, up to five times; say so if it never succeeds."""
    for attempt in range(5):
        try:
            await call()
            return
        except (KafkaError, OSError, redis.RedisError) as exc:
            if attempt == 4:
                print(f"cleanup: {what} failed: {exc!r}")
                return
            await asyncio.sleep(2.0)


async def delete_run_data(settings: Settings, *, topic_prefix: str, key_pattern: str) -> None:
    """Delete the Redis keys matching ``key_pattern`` and the topics and consumer groups
    whose names start with ``topic_prefix``, printing what went."""

    async def delete_redis_keys() -> None:
        def delete() -> int:
            client = connect_tables(settings)
            try:
                return delete_keys(client, key_pattern)
            finally:
                client.close()

        deleted = await asyncio.to_thread(delete)
        print(f"cleanup: {deleted:,} Redis keys deleted ({key_pattern})")

    async def delete_kafka() -> None:
        admin = AIOKafkaAdminClient(request_timeout_ms=30_000, **client_options(settings))
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if t.startswith(topic_prefix)]
            if topics:
                await admin.delete_topics(topics)
            listed = await admin.list_consumer_groups()
            groups = [str(g[0]) for g in listed if str(g[0]).startswith(topic_prefix)]
            await delete_consumer_groups(admin, groups)
            print(f"cleanup: {len(topics)} topics and {len(groups)} consumer groups deleted")
        finally:
            await admin.close()

    await retrying("Redis keys", delete_redis_keys)
    await retrying("Kafka topics and groups", delete_kafka)
