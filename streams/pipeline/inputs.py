"""What a stage reads of one input record, whoever hands it over.

The agents take their records from the fetch loop in raw micro-batches
(``streams.faustcompat.rawbatches.FetchedRecord``); tests and tools may hand the stages
Faust Events. Both have the three attributes the stages read.
"""

from __future__ import annotations

from typing import Any, Protocol


class InputRecord(Protocol):
    """One fetched record: its raw key and value, and Faust's message."""

    @property
    def key(self) -> Any:
        """The raw key bytes (None for an unkeyed record)."""

    @property
    def value(self) -> Any:
        """The raw value bytes (None for a tombstone)."""

    @property
    def message(self) -> Any:
        """Faust's ``ConsumerMessage`` (topic, partition, offset, tp, timestamp, headers)."""
