"""The Faust consumer's own record of where each partition is: read, and set after a seek.

Upstream: faust-streaming 0.15.3, ``faust/transport/consumer.py``, ``Consumer``:

- ``_committed_offset`` (``MutableMapping[TP, Optional[int]]``): the offset the last
  commit of each partition covered, also set by ``perform_seek``. Faust's commit logic
  compares the offsets it acknowledges with it; a position sought to by us that it does
  not hold looks like a gap, and commits of the partition stall.
- ``_read_offset`` (same type): the last offset the fetch loop handed to the streams
  (``Consumer._drain_messages``, here ``fetchloop``), also set by ``seek``. The fetch
  loop drops every message below it as already read.

Faust publishes neither. The stall check and the lag metric read them (the processed
position of a partition), and the seek after a rebalance (``streams.tablestore.resume``)
sets them to the positions it chose. Reads are defensive (a consumer without the maps
has no position); writes are not, as a wrong position would lose events.
``tests/unit/faustcompat/test_offsets_contract.py`` fails when either map changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.types import TP


def committed_offsets(consumer: Any) -> Mapping[TP, int | None]:
    """Per partition, the offset the consumer's last commit covered (read only)."""
    found: Mapping[TP, int | None] = getattr(consumer, "_committed_offset", {})
    return found


def read_offsets(consumer: Any) -> Mapping[TP, int | None]:
    """Per partition, the last offset the fetch loop handed to the streams (read only)."""
    found: Mapping[TP, int | None] = getattr(consumer, "_read_offset", {})
    return found


def committed_offset(consumer: Any, tp: TP) -> int | None:
    """The offset the consumer's last commit of ``tp`` covered, or None."""
    return committed_offsets(consumer).get(tp)


def set_committed_offsets(consumer: Any, offsets: Mapping[TP, int]) -> None:
    """Record ``offsets`` as committed, as Faust's own ``perform_seek`` does."""
    consumer._committed_offset.update(offsets)


def set_read_offsets(consumer: Any, offsets: Mapping[TP, int | None]) -> None:
    """Make the fetch loop take each partition as read up to its offset (None: nothing).

    The loop drops messages below the offset as already read.
    """
    consumer._read_offset.update(offsets)
