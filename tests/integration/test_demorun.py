"""DemoRun: each demo run has its own names and removes earlier runs' topics and keys."""

from __future__ import annotations

import asyncio

import redis
from aiokafka.admin import AIOKafkaAdminClient

from streams.demorun import DEMO_MARK, DemoRun
from streams.kafka import client_options, ensure_topics, product_topics
from streams.settings import Settings


async def topics_named(settings: Settings, prefix: str) -> set[str]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        return {t for t in await admin.list_topics() if t.startswith(prefix)}
    finally:
        await admin.close()


async def gone(settings: Settings, prefix: str, timeout_s: float = 30.0) -> bool:
    """Kafka deletes topics asynchronously: wait until none is listed."""
    for _ in range(int(timeout_s / 0.5)):
        if not await topics_named(settings, prefix):
            return True
        await asyncio.sleep(0.5)
    return False


def test_runs_have_their_own_names_and_clean_up_each_other(
    settings: Settings, redis_client: redis.Redis
) -> None:
    first, second = DemoRun.new(settings), DemoRun.new(settings)
    for run in (first, second):
        assert run.settings.topic_prefix.startswith(f"{settings.topic_prefix}{DEMO_MARK}")
        assert run.settings.app_id.startswith(f"{settings.app_id}-{DEMO_MARK}")
        assert run.settings.redis_key_prefix.startswith(f"{settings.redis_key_prefix}:{DEMO_MARK}")
    assert first.settings.topic_prefix != second.settings.topic_prefix
    for run in (first, second):
        asyncio.run(ensure_topics(run.settings, product_topics(run.settings)))
        redis_client.set(f"{run.settings.redis_key_prefix}:{{app/t/0}}:k:x", b"state")
    other = f"{settings.topic_prefix}transactions"  # not a demo's: left alone
    asyncio.run(ensure_topics(settings, [t for t in product_topics(settings) if t.name == other]))

    topics, keys = second.clean(others_only=True)
    assert topics == len(product_topics(first.settings))
    assert keys == 1
    assert asyncio.run(gone(settings, first.settings.topic_prefix))
    assert asyncio.run(topics_named(settings, second.settings.topic_prefix))
    assert redis_client.exists(f"{second.settings.redis_key_prefix}:{{app/t/0}}:k:x")

    topics, keys = second.clean(others_only=False)
    assert (topics, keys) == (len(product_topics(second.settings)), 1)
    assert asyncio.run(gone(settings, second.settings.topic_prefix))
    assert asyncio.run(topics_named(settings, other)) == {other}
