"""A Faust table that writes no changelog when its store does not want one.

Faust's table sends every write to the changelog topic, its largest per-table cost. A
``redis://`` store in its default mode keeps state durable in Redis instead, so with it
this table skips the send; with any other store (memory://, rocksdb://, or redis:// with
``changelog=true``) it behaves exactly like ``faust.Table``.

Without the send, a write does what the rest of Faust's ``Table.on_key_set`` and
``on_key_del`` do (faust-streaming 0.15.3, ``faust/tables/table.py``) for a table that
is not windowed: tell the app's sensors (``tests/unit/faustcompat/test_table_contract.py``
fails when those methods change). `send_to_changelog` is the other half of those methods,
for the stores that take raw writes without going through the table (``put_at``).
"""

from __future__ import annotations

from typing import Any

import faust


class Table(faust.Table[Any, Any]):
    """``faust.Table``, minus changelog sends when the store is the source of truth."""

    #: Read by RedisStore: this table honours ``uses_changelog = False``.
    suppresses_changelog = True

    def _writes_changelog(self) -> bool:
        return bool(getattr(self.data, "uses_changelog", True))

    def on_key_set(self, key: Any, value: Any) -> None:
        """Record a write: to the changelog only when the store needs it."""
        if self._writes_changelog():
            super().on_key_set(key, value)
        else:
            self.app.sensors.on_table_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        """Record a deletion: to the changelog only when the store needs it."""
        if self._writes_changelog():
            super().on_key_del(key)
        else:
            self.app.sensors.on_table_del(self, key)


def send_to_changelog(table: Any, partition: int, key: bytes, value: bytes | None) -> None:
    """What a write through a Faust table does besides storing: changelog and sensors.

    ``faust.Table.on_key_set`` (``on_key_del`` for None) for a write already encoded and
    placed in table ``partition``: the record goes to that partition of the table's
    changelog topic, raw, and the app's sensors are told. (Faust's source-topic
    partition check and window expiry are left out: the stores that call this place
    each write in its event's partition themselves, and windowed tables are written
    through the table.)
    """
    table.send_changelog(partition, key, value, key_serializer="raw", value_serializer="raw")
    if value is None:
        table.app.sensors.on_table_del(table, key)
    else:
        table.app.sensors.on_table_set(table, key, value)
