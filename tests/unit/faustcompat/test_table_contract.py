"""The Faust table and store code fraudstream's table and redis:// store build on.

``streams.tablestore.table.Table`` repeats what ``faust.Table.on_key_set`` and
``on_key_del`` do minus the changelog send; ``streams.tablestore.store.RedisStore``
implements the byte-level primitives ``SerializedStore`` declares abstract.
"""

from __future__ import annotations

import inspect

import faust.tables.table
from faust.stores.base import SerializedStore
from faust.tables.table import Table as FaustTable
from upstream import assert_unchanged, unstarted_app

from streams.tablestore.store import RedisStore
from streams.tablestore.table import Table

#: Reads and writes of one key; the size, iteration and clearing of the whole store.
PRIMITIVES = frozenset(
    (
        "_get",
        "_set",
        "_del",
        "_contains",
        "_size",
        "_iterkeys",
        "_itervalues",
        "_iteritems",
        "_clear",
    )
)


def test_fausts_table_writes_are_the_ones_mirrored() -> None:
    for method, digest in (
        ("Table.on_key_set", "4aa2e85d27136719575805b04734c6f19c7d3f832e5019437bf462383bce0ac5"),
        ("Table.on_key_del", "69a4a37cf8e900eaf73ef551403cf55b3df93ea0107d36d8f1b54a1bd1edf34c"),
    ):
        assert_unchanged(faust.tables.table, method, digest, "streams/tablestore/table.py")
    assert issubclass(Table, FaustTable)


async def test_the_sensor_calls_are_the_apps_sensors() -> None:
    """Faust's ``_sensor_on_set`` is an alias of ``app.sensors.on_table_set``: calling the
    latter, as our table does, is the same call through a public name."""
    with unstarted_app("contract-table") as app:
        table = app.Table("contract", default=int)
        assert table._sensor_on_set == app.sensors.on_table_set  # type: ignore[attr-defined]
        assert table._sensor_on_del == app.sensors.on_table_del  # type: ignore[attr-defined]


def test_the_store_primitives_are_the_ones_faust_declares_abstract() -> None:
    private = {name for name in SerializedStore.__abstractmethods__ if name.startswith("_")}
    assert private == PRIMITIVES
    for name in PRIMITIVES:
        ours, theirs = getattr(RedisStore, name), getattr(SerializedStore, name)
        assert ours is not theirs, name
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(theirs).parameters
        ), name
    assert not inspect.isabstract(RedisStore)
