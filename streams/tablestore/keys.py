"""Where a table's entries and offsets live in Redis: a pure, byte-exact key layout.

Every key of one table partition carries the same Redis Cluster hash tag, so a partition's
entries and its offsets sit in one slot: the flush that writes them together is a single
atomic script even on a cluster, while different partitions spread over the masters.

Layout, for namespace ``fraudstream``, app ``fraudstream``, table ``customer_windows``,
partition 3::

    fraudstream:{fraudstream/customer_windows/3}:k:<key bytes>   one entry (a string)
    fraudstream:{fraudstream/customer_windows/3}:offsets         hash: offsets and owner

The key bytes are the table's serialized key, appended unchanged (binary-safe).
"""

from __future__ import annotations

import re
from typing import Final

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9._:-]+$")

#: Field of the offsets hash holding the consumer-group generation that owns the partition.
OWNER_FIELD: Final = b"owner_generation"

#: Field of the offsets hash counting the partition's flushes: each flush script checks
#: it equals the count its writer last saw and adds one, so a Redis that went back in
#: time (lost acknowledged writes, or restarted empty) is detected by the next flush.
SEQUENCE_FIELD: Final = b"flush_seq"

_REFUSED = b"refused:"


def partition_prefix(namespace: str, app_id: str, table: str, partition: int) -> bytes:
    """The prefix, hash tag included, shared by every key of one table partition.

    Raises:
        ValueError: a name holds characters that would break the tag or the layout.
    """
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"invalid Redis key namespace {namespace!r}")
    for what, name in (("app id", app_id), ("table name", table)):
        if not _NAME.match(name):
            raise ValueError(f"invalid {what} {name!r}: use letters, digits, '.', '_', '-'")
    if partition < 0:
        raise ValueError(f"invalid partition {partition}")
    return f"{namespace}:{{{app_id}/{table}/{partition}}}:".encode()


def entry_key(prefix: bytes, key: bytes) -> bytes:
    """The Redis key of one table entry."""
    return prefix + b"k:" + key


def entry_pattern(prefix: bytes) -> bytes:
    """A SCAN MATCH pattern for the entries of one partition (glob characters escaped)."""
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", prefix) + b"k:*"


def table_entry_pattern(namespace: str, app_id: str, table: str) -> bytes:
    """A SCAN MATCH pattern for the entries of every partition of one table."""
    prefix = partition_prefix(namespace, app_id, table, 0)
    tagged = prefix[: prefix.rindex(b"/") + 1]  # up to the partition number in the tag
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", tagged) + b"*}:k:*"


def partition_of_entry(key: bytes) -> int | None:
    """The table partition of an entry key (the number ending its hash tag), or None.

    Namespaces, app ids and table names hold no ``{``, ``}`` or ``/``, so the first
    hash tag of a key is the layout's own.
    """
    start = key.find(b"{")
    end = key.find(b"}", start + 1)
    if start < 0 or end < 0:
        return None
    number = key[key.rfind(b"/", start, end) + 1 : end]
    return int(number) if number.isdigit() else None


def offsets_key(prefix: bytes) -> bytes:
    """The hash holding the partition's persisted offsets and owner generation."""
    return prefix + b"offsets"


def offset_field(topic: str, partition: int) -> bytes:
    """Field of the offsets hash for one topic partition (source or changelog)."""
    return f"tp:{topic}:{partition}".encode()


def refused_field(topic: str, partition: int) -> bytes:
    """Field of the offsets hash marking a source partition refused; its value says why.

    Written when Redis lost a partition's state and the log no longer holds all the
    events to rebuild it: every worker leaves that source partition unprocessed rather
    than scoring with state missing, until an operator deletes the field.
    """
    return _REFUSED + offset_field(topic, partition)


def parse_refused_field(field: bytes) -> tuple[str, int] | None:
    """The topic partition a refused field names, or None for other fields."""
    if not field.startswith(_REFUSED):
        return None
    return parse_offset_field(field[len(_REFUSED) :])


def parse_offset_field(field: bytes) -> tuple[str, int] | None:
    """The topic partition named by an offsets-hash field, or None for other fields."""
    if not field.startswith(b"tp:"):
        return None
    topic, _, partition = field[3:].decode().rpartition(":")
    return topic, int(partition)
