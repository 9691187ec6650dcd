"""partition_store_of and FaustTableStore: how the agents see a table on memory:// or redis://.

No broker and no Redis: the apps are never started, and a changelog record is read from
the producer's buffer, where a table's write leaves it until the producer sends it (the
tests that write run on an event loop, which Faust's producer needs).
"""

from __future__ import annotations

import uuid
from typing import Any

import faust
from faust.types import TP

from streams.tablestore import RedisStore, Table
from streams.tablestore.fausttable import FaustTableStore, partition_store_of

PARTITIONS = 4


class TableWrites(faust.Sensor):
    """The table writes the app's sensors are told of."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, Any, Any]] = []

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        self.seen.append(("set", key, value))

    def on_table_del(self, table: Any, key: Any) -> None:
        self.seen.append(("del", key, None))


def app_with(store: str) -> faust.App:
    return faust.App(
        f"unit-fausttable-{uuid.uuid4().hex[:8]}",
        broker="kafka://127.0.0.1:1",
        store=store,
        Table=Table,
        autodiscover=False,
        web_enabled=False,
    )


def raw_table(app: faust.App) -> Any:
    return app.Table("windows", key_type=bytes, value_type=bytes, partitions=PARTITIONS)


def changelog_records(app: faust.App) -> list[tuple[str, int, bytes, bytes | None]]:
    """The records the app's tables have sent so far: (topic, partition, key, value)."""
    pending = app.producer.buffer.pending
    records = []
    while not pending.empty():
        message = pending.get_nowait().message
        records.append(
            (message.channel.get_topic_name(), message.partition, message.key, message.value)
        )
    return records


def test_a_redis_table_hands_over_its_own_store() -> None:
    for url in ("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0?changelog=true"):
        table = raw_table(app_with(url))
        store = partition_store_of(table)
        assert isinstance(store, RedisStore)
        assert store is table.data


def test_a_memory_table_is_seen_through_the_adapter() -> None:
    table = raw_table(app_with("memory://"))
    store = partition_store_of(table)
    assert isinstance(store, FaustTableStore)
    assert store.table is table


async def test_a_write_is_an_entry_a_changelog_record_and_a_sensor_call() -> None:
    app = app_with("memory://")
    sensor = TableWrites()
    app.sensors.add(sensor)
    table = raw_table(app)
    store = partition_store_of(table)
    changelog = f"{app.conf.id}-windows-changelog"

    store.put_at(TP("source", 2), 5, b"K", b"V")
    store.put_at(TP("source", 3), 9, b"L", b"W")
    assert store.get_in(2, b"K") == b"V"
    assert table.data[b"K"] == b"V"  # in Faust's store, which the changelog recovers
    assert store.entries_in_memory() == 2
    store.put_at(TP("source", 2), 6, b"K", None)
    assert store.get_in(2, b"K") is None
    assert b"K" not in table.data
    store.put_at(TP("source", 2), 7, b"never written", None)  # deleting nothing

    assert changelog_records(app) == [
        (changelog, 2, b"K", b"V"),
        (changelog, 3, b"L", b"W"),
        (changelog, 2, b"K", None),
        (changelog, 2, b"never written", None),
    ]
    assert sensor.seen == [
        ("set", b"K", b"V"),
        ("set", b"L", b"W"),
        ("del", b"K", None),
        ("del", b"never written", None),
    ]
    assert store.entries_in_memory() == 1


async def test_peek_and_prefetch_serve_this_workers_entries() -> None:
    store = partition_store_of(raw_table(app_with("memory://")))
    store.put_at(TP("source", 1), 1, b"A", b"a")
    store.put_at(TP("source", 3), 1, b"B", b"b")
    store.prefetch({1: [b"A"], 0: [b"missing"]})
    assert store.peek({3: [b"B", b"missing", b"B"], 1: [b"A"]}) == {
        3: [b"b", None, b"b"],
        1: [b"a"],
    }
    assert store.get_in(3, b"B") == b"b"


async def test_sources_resume_at_the_groups_offsets_so_no_offset_is_kept() -> None:
    store = partition_store_of(raw_table(app_with("memory://")))
    store.note_position(TP("source", 1), 3)
    store.put_at(TP("source", 1), 4, b"A", b"a")
    await store.flush()
    assert [store.stored_offsets(p) for p in range(PARTITIONS)] == [{}] * PARTITIONS
    assert store.get_in(1, b"A") == b"a"


async def test_redis_with_changelog_sends_what_put_at_writes() -> None:
    app = app_with("redis://127.0.0.1:1/0?changelog=true")
    sensor = TableWrites()
    app.sensors.add(sensor)
    store = partition_store_of(raw_table(app))
    assert isinstance(store, RedisStore)

    store.put_at(TP("source", 1), 8, b"K", b"V")  # cached: no Redis call before a flush
    store.put_at(TP("source", 1), 9, b"D", None)

    assert store.get_in(1, b"K") == b"V"
    changelog = f"{app.conf.id}-windows-changelog"
    assert changelog_records(app) == [(changelog, 1, b"K", b"V"), (changelog, 1, b"D", None)]
    assert sensor.seen == [("set", b"K", b"V"), ("del", b"D", None)]
