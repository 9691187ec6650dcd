"""The Redis key layout, byte for byte: it is a storage format, so it must never drift."""

from __future__ import annotations

import pytest

from streams.tablestore.keys import (
    entry_key,
    entry_pattern,
    offset_field,
    offsets_key,
    parse_offset_field,
    partition_prefix,
)


def test_layout_is_exact() -> None:
    prefix = partition_prefix("fraudstream", "fraudstream", "customer_windows", 3)
    assert prefix == b"fraudstream:{fraudstream/customer_windows/3}:"
    assert entry_key(prefix, b'"C000042"') == (
        b'fraudstream:{fraudstream/customer_windows/3}:k:"C000042"'
    )
    assert offsets_key(prefix) == b"fraudstream:{fraudstream/customer_windows/3}:offsets"
    assert offset_field("transactions", 3) == b"tp:transactions:3"


def test_a_partition_shares_one_cluster_hash_tag() -> None:
    prefix = partition_prefix("ns", "app", "t", 0)
    tag = b"{app/t/0}"
    for key in (entry_key(prefix, b"a"), entry_key(prefix, b"{b}"), offsets_key(prefix)):
        first = key.index(b"{")
        assert key[first : key.index(b"}", first) + 1] == tag


def test_keys_are_binary_safe_and_distinct_per_table_and_partition() -> None:
    raw = bytes(range(256))
    a = entry_key(partition_prefix("ns", "app", "t", 1), raw)
    assert a.endswith(raw)
    assert a != entry_key(partition_prefix("ns", "app", "t", 2), raw)
    assert a != entry_key(partition_prefix("ns", "app", "u", 1), raw)
    assert a != entry_key(partition_prefix("ns2", "app", "t", 1), raw)


def test_scan_pattern_escapes_glob_characters() -> None:
    assert entry_pattern(b"ns:{a/t/1}:") == b"ns:{a/t/1}:k:*"
    assert entry_pattern(b"n*s?:[x]:") == rb"n\*s\?:\[x\]:k:*"


def test_offset_fields_round_trip_and_ignore_other_fields() -> None:
    assert parse_offset_field(offset_field("app-counts-changelog", 11)) == (
        "app-counts-changelog",
        11,
    )
    assert parse_offset_field(offset_field("a:b", 2)) == ("a:b", 2)
    assert parse_offset_field(b"owner") is None


@pytest.mark.parametrize(
    ("namespace", "app_id", "table", "partition"),
    [("ns", "a{b}", "t", 0), ("ns", "app", "t/x", 0), ("n s", "app", "t", 0), ("ns", "a", "t", -1)],
)
def test_names_that_would_break_the_layout_are_refused(
    namespace: str, app_id: str, table: str, partition: int
) -> None:
    with pytest.raises(ValueError, match="invalid"):
        partition_prefix(namespace, app_id, table, partition)
