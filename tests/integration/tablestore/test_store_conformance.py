"""One contract, every store: the same table operations give the same answers.

A real Faust app (in this process, real broker) runs a scripted agent against a table on
memory://, redis:// and redis:// with changelog. The agent performs each step while
processing an event, as production agents do, and records what it observes; every store
must observe the same. For the Redis stores a second app instance then reopens the table
and must find the state and the offsets it covers. (memory:// keeps nothing of its own;
its changelog recovery is Faust's, and restarting it inside one test process proved
flaky in Faust's recovery, so it is not repeated here.)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaProducer

from streams.app import create_app
from streams.kafka import TopicSpec, client_options, ensure_topics
from streams.settings import Settings
from streams.tablestore.keys import offset_field, offsets_key, partition_prefix

SCRIPT: list[list[Any]] = [
    ["set", "a", 1],
    ["set", "b", {"nested": [1, 2]}],
    ["set", "c", 3],
    ["del", "c"],
    ["set", "a", 10],
    ["observe"],
]

EXPECTED_OBSERVATION = {
    "a": 10,
    "b": {"nested": [1, 2]},
    "c_present": False,
    "missing_get": None,
    "contains_a": True,
}
EXPECTED_STATE = {"a": 10, "b": {"nested": [1, 2]}}


def run_app(
    settings: Settings, store: str, events: list[list[Any]], options: dict[str, Any]
) -> Any:
    """Start an app, feed it the events, return (observations, final table contents)."""

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        source = settings.topic("script")
        await ensure_topics(settings, [TopicSpec(source, 1)])
        producer = AIOKafkaProducer(**client_options(settings))
        await producer.start()
        try:
            for step in events:
                await producer.send_and_wait(source, key=b"k", value=json.dumps(step).encode())
        finally:
            await producer.stop()

        app = create_app(settings.model_copy(update={"table_store": store}), web_enabled=False)
        topic = app.topic(source, key_type=str)
        table = app.Table("conformance", partitions=1, options=options or None)
        observations: list[dict[str, Any]] = []
        done = asyncio.Event()
        seen = 0

        @app.agent(topic)
        async def scripted(stream: Any) -> None:
            nonlocal seen
            async for step in stream:
                operation = step[0]
                if operation == "set":
                    table[step[1]] = step[2]
                elif operation == "del":
                    del table[step[1]]
                elif operation == "observe":
                    observations.append(
                        {
                            "a": table.get("a"),
                            "b": table.get("b"),
                            "c_present": "c" in table,
                            "missing_get": table.get("never-set"),
                            "contains_a": "a" in table,
                        }
                    )
                seen += 1
                if seen >= len(events):
                    done.set()

        await app.start()
        try:
            async with asyncio.timeout(60):
                await done.wait()
            contents = dict(table.items())
            size = len(table)
        finally:
            await app.stop()
        assert size == len(contents)
        return observations, contents

    return asyncio.run(scenario())


STORES: dict[str, tuple[str, dict[str, Any]]] = {
    "memory": ("memory://", {}),
    "redis": ("REDIS", {}),
    "redis-changelog": ("REDIS?changelog=true", {}),
}


@pytest.mark.parametrize("store_name", list(STORES))
def test_every_store_observes_and_keeps_the_same(
    settings: Settings, store_name: str, redis_client: redis.Redis
) -> None:
    url, options = STORES[store_name]
    store = url.replace("REDIS", settings.redis_url)

    observations, contents = run_app(settings, store, SCRIPT, options)
    assert observations == [EXPECTED_OBSERVATION]
    assert contents == EXPECTED_STATE

    if store_name == "memory":
        return
    # A new instance of the app (same id) finds the state again, then goes on.
    observations, contents = run_app(settings, store, [["set", "d", 4], ["observe"]], options)
    assert observations == [EXPECTED_OBSERVATION]
    assert contents == {**EXPECTED_STATE, "d": 4}

    prefix = partition_prefix(settings.redis_key_prefix, settings.app_id, "conformance", 0)
    offsets = redis_client.hgetall(offsets_key(prefix))
    if store_name == "redis":
        # No changelog: Redis holds the source offset after the last event that wrote
        # (offset 6, "set d"; the observing event at 7 changed nothing).
        assert offsets[offset_field(settings.topic("script"), 0)] == b"7"
    else:
        # Changelog: Redis holds the last changelog offset its data covers (6 writes,
        # offsets 0 to 5).
        changelog = f"{settings.app_id}-conformance-changelog"
        assert offsets[offset_field(changelog, 0)] == b"5"


def test_a_changelog_mode_table_is_rebuilt_from_the_changelog_alone(
    settings: Settings, redis_client: redis.Redis
) -> None:
    store = f"{settings.redis_url}?changelog=true"
    run_app(settings, store, SCRIPT, {})
    # Same app and changelog, empty Redis namespace: recovery must replay the changelog.
    fresh = {"namespace": f"{settings.redis_key_prefix}-rebuilt"}
    observations, contents = run_app(settings, store, [["observe"]], fresh)
    assert observations == [EXPECTED_OBSERVATION]
    assert contents == EXPECTED_STATE
    for key in redis_client.scan_iter(match=f"{settings.redis_key_prefix}-rebuilt*"):
        redis_client.delete(key)


def test_redis_scheme_resolves_to_our_store_not_the_redis_module() -> None:
    from faust.stores import by_url

    from streams.tablestore import RedisStore

    assert by_url("redis://127.0.0.1:6379/0") is RedisStore
    assert by_url("rediss://cache:6380/0") is RedisStore
