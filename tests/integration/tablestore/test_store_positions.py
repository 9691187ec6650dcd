"""RedisStore.get_in / put_at against the real Redis: entries and resume offsets by position.

The agents of a micro-batch read and write entries with the event's partition and offset
given explicitly. Stores are made as Faust makes them (``table.data`` of a table of an app
from ``create_app``), under the test's own key namespace, and are never started: the test
flushes them itself (without waiting for a producer, which is never started either).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from faust.types import TP

from streams.settings import Settings
from streams.tablestore import RedisStore
from streams.tablestore.keys import entry_key, offset_field, offsets_key, partition_prefix

TABLE = "positions"
PARTITIONS = 3

OpenStore = Callable[..., Awaitable[RedisStore]]


@pytest.fixture
def open_store(
    settings: Settings, redis_client: redis.Redis, make_store: Callable[..., RedisStore]
) -> OpenStore:
    """Make a store of the test's table (a new app each time: another worker's store)."""

    async def make(**options: Any) -> RedisStore:
        return make_store(settings, TABLE, PARTITIONS, settings.redis_url, **options)

    return make


def prefix(settings: Settings, partition: int) -> bytes:
    return partition_prefix(settings.redis_key_prefix, settings.app_id, TABLE, partition)


def stored_offsets(
    client: redis.Redis, settings: Settings, partition: int
) -> dict[bytes | str, bytes | str]:
    return client.hgetall(offsets_key(prefix(settings, partition)))


def stored_entry(client: redis.Redis, settings: Settings, partition: int, key: bytes) -> Any:
    return client.get(entry_key(prefix(settings, partition), key))


async def test_put_at_is_served_by_get_in_before_any_flush(
    settings: Settings, redis_client: redis.Redis, open_store: OpenStore
) -> None:
    store = await open_store()
    source = settings.topic("transactions")
    store.put_at(TP(source, 1), 10, b"C1", b"one")
    store.put_at(TP(source, 1), 11, b"C2", b"two")
    store.put_at(TP(source, 2), 4, b"C1", b"other partition")

    assert store.get_in(1, b"C1") == b"one"
    assert store.get_in(1, b"C2") == b"two"
    assert store.get_in(2, b"C1") == b"other partition"
    assert store.get_in(0, b"C1") is None  # never written there
    assert store.get_in(2, b"C2") is None
    # Nothing of it is in Redis yet.
    assert stored_entry(redis_client, settings, 1, b"C1") is None
    assert stored_entry(redis_client, settings, 2, b"C1") is None

    store.put_at(TP(source, 1), 12, b"C1", None)  # a deletion
    assert store.get_in(1, b"C1") is None


async def test_a_flush_persists_the_entries_and_the_offset_after_the_last_event(
    settings: Settings, redis_client: redis.Redis, open_store: OpenStore
) -> None:
    store = await open_store()
    source = settings.topic("transactions")
    field = offset_field(source, 1)
    store.put_at(TP(source, 1), 10, b"C1", b"one")
    # Before any flush, only the registered start is in Redis: the event itself, so a
    # crash now reads it again.
    assert stored_offsets(redis_client, settings, 1)[field] == b"10"
    store.put_at(TP(source, 1), 11, b"C2", b"two")
    store.put_at(TP(source, 2), 3, b"C3", b"three")

    await store.flush(wait_for_producer=False)

    assert stored_entry(redis_client, settings, 1, b"C1") == b"one"
    assert stored_entry(redis_client, settings, 1, b"C2") == b"two"
    assert stored_entry(redis_client, settings, 2, b"C3") == b"three"
    assert stored_offsets(redis_client, settings, 1)[field] == b"12"
    assert stored_offsets(redis_client, settings, 2)[offset_field(source, 2)] == b"4"
    assert offset_field(source, 0) not in stored_offsets(redis_client, settings, 0)
    assert redis_client.pttl(entry_key(prefix(settings, 1), b"C1")) > 0  # written with a TTL

    # A deletion is flushed too, and moves the offset on.
    store.put_at(TP(source, 1), 12, b"C1", None)
    await store.flush(wait_for_producer=False)
    assert stored_entry(redis_client, settings, 1, b"C1") is None
    assert stored_offsets(redis_client, settings, 1)[field] == b"13"


async def test_an_earlier_offset_written_after_a_later_one_does_not_move_the_offset_back(
    settings: Settings, redis_client: redis.Redis, open_store: OpenStore
) -> None:
    store = await open_store()
    source = settings.topic("transactions")
    store.put_at(TP(source, 0), 20, b"late", b"x")
    store.put_at(TP(source, 0), 15, b"early", b"y")
    store.put_at(TP(source, 0), 18, b"late", b"z")

    await store.flush(wait_for_producer=False)

    assert stored_offsets(redis_client, settings, 0)[offset_field(source, 0)] == b"21"
    assert stored_entry(redis_client, settings, 0, b"early") == b"y"
    assert stored_entry(redis_client, settings, 0, b"late") == b"z"  # the last write wins


async def test_get_in_loads_an_entry_only_in_redis(
    settings: Settings, redis_client: redis.Redis, open_store: OpenStore
) -> None:
    source = settings.topic("transactions")
    writer = await open_store()
    reader = await open_store()  # another worker's store of the same table
    assert reader is not writer

    assert reader.get_in(1, b"C1") is None  # read before the write: absent then
    writer.put_at(TP(source, 1), 5, b"C1", b"v1")
    writer.put_at(TP(source, 1), 6, b"C2", b"v2")
    await writer.flush(wait_for_producer=False)

    assert reader.get_in(1, b"C2") == b"v2"  # loaded from Redis
    assert reader.get_in(2, b"C2") is None  # the entry lives in partition 1 only
    redis_client.delete(entry_key(prefix(settings, 1), b"C2"))
    assert reader.get_in(1, b"C2") == b"v2"  # served from its cache now
    # C1 was read (absent) before the write: the reader's cache keeps that answer until
    # a rebalance drops it, as for any other read of a partition the worker does not own.
    assert reader.get_in(1, b"C1") is None
    fresh = await open_store()
    assert fresh.get_in(1, b"C1") == b"v1"


async def test_with_changelog_put_at_records_no_source_offsets(
    settings: Settings, redis_client: redis.Redis, open_store: OpenStore
) -> None:
    store = await open_store(changelog="true")
    assert store.uses_changelog
    source = settings.topic("transactions")
    store.put_at(TP(source, 1), 10, b"C1", b"one")
    assert store.get_in(1, b"C1") == b"one"
    await store.flush(wait_for_producer=False)

    assert stored_entry(redis_client, settings, 1, b"C1") == b"one"
    assert offset_field(source, 1) not in stored_offsets(redis_client, settings, 1)


async def test_resume_offsets_are_where_the_state_ends_flushed_or_not(
    settings: Settings, open_store: OpenStore
) -> None:
    """The seek after a rebalance asks at the moment it seeks: every write counts, even one
    a flush has taken but not written yet (Faust may seek during that flush's await)."""
    store = await open_store()
    source = TP(settings.topic("transactions"), 1)
    store.put_at(source, 10, b"C1", b"one")
    store.put_at(source, 11, b"C2", b"two")
    assert store.resume_offsets() == {source: 12}

    during_flush: list[dict[TP, int]] = []

    def deliveries_ok() -> None:
        during_flush.append(store.resume_offsets())

    store.delivery_failure = deliveries_ok
    store.put_at(source, 12, b"C1", b"three")
    await store.flush(wait_for_producer=False)
    assert during_flush == [{source: 13}]
    assert store.resume_offsets() == {source: 13}  # flushed: still where the state ends
    store.put_at(source, 13, b"C3", b"four")
    assert store.resume_offsets() == {source: 14}


async def test_with_changelog_there_is_no_resume_offset_to_seek_to(
    settings: Settings, open_store: OpenStore
) -> None:
    store = await open_store(changelog="true")
    store.put_at(TP(settings.topic("transactions"), 1), 10, b"C1", b"one")
    assert store.resume_offsets() == {}


class RecordingConsumer:
    """What ``on_recovery_completed`` calls of Faust's consumer, in order."""

    def __init__(self, assigned: set[TP]) -> None:
        self.calls: list[str] = []
        self.flow_active = True
        self.assigned = assigned

    def stop_flow(self) -> None:
        self.calls.append("stop_flow")
        self.flow_active = False

    def assignment(self) -> set[TP]:
        self.calls.append("assignment")
        return self.assigned

    def pause_partitions(self, tps: Any) -> None:
        self.calls.append("pause_partitions")

    def resume_partitions(self, tps: Any) -> None:
        self.calls.append("resume_partitions")


async def test_the_end_of_a_rebalance_stops_the_flow_until_the_seek(
    settings: Settings, open_store: OpenStore
) -> None:
    """Faust resumes the source partitions right after this hook, then seeks: a fetch in
    flight would hand the streams records from the group's (lagging) offsets first."""
    store = await open_store()
    source = TP(settings.topic("transactions"), 1)
    consumer = RecordingConsumer({source})
    store.app.consumer = consumer  # type: ignore[misc,assignment]
    store._owned = {1}
    await store.on_recovery_completed({source}, set())
    assert consumer.calls[0] == "stop_flow"
    assert not consumer.flow_active  # Faust's caller resumes it after the seek
