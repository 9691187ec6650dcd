r"""Hand every fetched record to the worker, whatever its header names hold.

aiokafka 0.14.0 decodes each Kafka header *name* as strict UTF-8 while it unpacks a
fetched record batch (``aiokafka.record.default_records``: ``_read_msg``, and the same
in its C extension ``aiokafka.record._crecords.default_records``). A record whose header
name is not UTF-8 (``kcat -H $'\\xfe\\xff=1'`` writes one; the Kafka protocol does not
forbid it in practice) raises ``UnicodeDecodeError`` out of ``Fetcher.getmany``: the
consumer's fetch task crashes, the worker exits, and every worker that takes the
partition over dies on the same record.

`TolerantMemoryRecords` replaces ``aiokafka.consumer.fetcher.MemoryRecords`` (the name
the fetcher calls for each fetched partition's bytes). It slices the fetched bytes into
batches as aiokafka's pure-Python ``_MemoryRecordsPy`` does and iterates each batch with
aiokafka's fast C batch (``DefaultRecordBatch``); when that batch fails to decode a
header name, the rest of the batch is read again with aiokafka's own pure-Python batch
(``_DefaultRecordBatchPy``) over a buffer whose ``decode`` uses ``surrogateescape``: the
name reaches the worker as a ``str`` holding the undecodable bytes as lone surrogates
(``name.encode("utf-8", "surrogateescape")`` gives them back), and the record is
processed like any other. Records already handed over are not handed over twice.

Only magic-2 batches (Kafka >= 0.11, the only ones with headers) go through the wrapper;
older formats are returned as aiokafka makes them.
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Any, Final, SupportsIndex, overload

from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.record import default_records
from aiokafka.record.memory_records import _MemoryRecordsPy

logger = logging.getLogger(__name__)

_INSTALLED: Final = "_fraudstream_tolerant"
#: Where a batch's magic byte is: base offset (8), length (4), leader epoch (4).
_MAGIC_OFFSET: Final = struct.calcsize(">qii")
#: Least seconds between two warnings about such batches (a producer may send many).
WARN_EVERY_S: Final = 60.0
_last_warning = -WARN_EVERY_S


class _LenientBytes(bytearray):
    """A slice of a record buffer whose ``decode`` keeps undecodable bytes (surrogates)."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytearray.decode(self, encoding, "surrogateescape")


class _LenientBuffer(bytearray):
    """A record batch buffer whose slices are `_LenientBytes` (only slices: ints stay ints)."""

    @overload
    def __getitem__(self, index: SupportsIndex) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> bytearray: ...
    def __getitem__(self, index: SupportsIndex | slice) -> int | bytearray:
        item = bytearray.__getitem__(self, index)
        if isinstance(item, bytearray):
            return _LenientBytes(item)
        return item


class _LenientBatchPy(default_records._DefaultRecordBatchPy):  # type: ignore[misc]
    """aiokafka's pure-Python batch, reading header names with ``surrogateescape``."""

    def _maybe_uncompress(self) -> None:
        super()._maybe_uncompress()
        buffer: bytearray = self._buffer  # type: ignore[has-type]  # aiokafka's, untyped
        if type(buffer) is not _LenientBuffer:
            self._buffer = _LenientBuffer(buffer)


class TolerantBatch:
    """A magic-2 record batch: aiokafka's C batch, or the lenient Python one on failure.

    Every attribute but iteration is the C batch's (``validate_crc``, ``base_offset``,
    ``producer_id``, ``is_control_batch``, ...).
    """

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._batch = default_records.DefaultRecordBatch(data)
        self._records: Any = None
        self._next_offset: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> TolerantBatch:
        self._records = iter(self._batch)
        return self

    def __next__(self) -> Any:
        if self._records is None:
            iter(self)
        try:
            record = next(self._records)
        except UnicodeDecodeError:
            record = self._read_leniently()
        self._next_offset = record.offset + 1
        return record

    def _read_leniently(self) -> Any:
        """Switch to the lenient batch and skip what the C batch already handed over."""
        lenient = _LenientBatchPy(self._data)
        self._records = iter(lenient)
        global _last_warning
        now = time.monotonic()
        if now - _last_warning > WARN_EVERY_S:
            _last_warning = now
            logger.warning(
                "a record batch at offset %d has a header name that is not UTF-8; "
                "reading it with surrogate escapes (said at most once a minute)",
                lenient.base_offset,
            )
        for record in self._records:
            if self._next_offset is None or record.offset >= self._next_offset:
                return record
        raise StopIteration


class TolerantMemoryRecords(_MemoryRecordsPy):  # type: ignore[misc]
    """``MemoryRecords`` whose magic-2 batches are `TolerantBatch`es."""

    def next_batch(self, *args: Any, **kwargs: Any) -> Any:
        """The next batch: a `TolerantBatch` for magic 2, else aiokafka's own."""
        data = self._next_slice
        if data is None or len(data) <= _MAGIC_OFFSET or data[_MAGIC_OFFSET] < 2:
            return super().next_batch(*args, **kwargs)
        self._cache_next()
        return TolerantBatch(data)


def install() -> None:
    """Make aiokafka's fetcher unpack fetched records with `TolerantMemoryRecords`."""
    if getattr(aiokafka_fetcher.MemoryRecords, _INSTALLED, False):
        return
    setattr(TolerantMemoryRecords, _INSTALLED, True)
    aiokafka_fetcher.MemoryRecords = TolerantMemoryRecords
