"""The Faust consumer's offset maps that streams.faustcompat.offsets reads and sets."""

from __future__ import annotations

import typing
from collections.abc import MutableMapping

import faust.transport.consumer
from faust.transport.consumer import Consumer
from faust.types import TP
from upstream import unstarted_app, upstream_source

from streams.faustcompat import offsets

A = TP("transactions", 0)


def test_both_maps_are_declared_per_partition_optional_offsets() -> None:
    hints = typing.get_type_hints(Consumer)
    for name in ("_committed_offset", "_read_offset"):
        assert typing.get_origin(hints[name]) is MutableMapping
        assert typing.get_args(hints[name]) == (TP, int | None)


async def test_a_new_consumer_has_both_maps_and_they_read_none_for_any_partition() -> None:
    with unstarted_app("contract-offsets") as app:
        consumer = app.consumer
        assert offsets.committed_offsets(consumer)[A] is None
        assert offsets.read_offsets(consumer)[A] is None
        offsets.set_committed_offsets(consumer, {A: 7})
        offsets.set_read_offsets(consumer, {A: 6})
        assert offsets.committed_offset(consumer, A) == 7
        assert consumer._committed_offset[A] == 7  # type: ignore[attr-defined]
        assert consumer._read_offset[A] == 6  # type: ignore[attr-defined]


def test_faust_keeps_the_maps_where_we_set_and_read_them() -> None:
    """Faust's own seek sets both; its commit logic reads the committed one; its fetch
    loop skips below the read one (that loop is mirrored: test_fetchloop_contract)."""
    perform_seek = upstream_source(faust.transport.consumer, "Consumer.perform_seek")
    assert "self._committed_offset.update(" in perform_seek
    assert "read_offset = self._read_offset" in perform_seek
    assert "self._read_offset[ensure_TP(partition)] = offset if offset else None" in (
        upstream_source(faust.transport.consumer, "Consumer.seek")
    )
    assert "self._committed_offset.update(committable_offsets)" in upstream_source(
        faust.transport.consumer, "Consumer._commit_offsets"
    )
    assert "committed = self._committed_offset[tp]" in upstream_source(
        faust.transport.consumer, "Consumer._should_commit"
    )
    assert "committed_offset = self._committed_offset[tp]" in upstream_source(
        faust.transport.consumer, "Consumer._new_offset"
    )


def test_a_consumer_without_the_maps_has_no_position() -> None:
    assert offsets.committed_offsets(object()) == {}
    assert offsets.read_offsets(object()) == {}
    assert offsets.committed_offset(object(), A) is None
