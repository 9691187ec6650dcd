"""Records whose header names are not UTF-8 reach the worker (streams.faustcompat.records)."""

from __future__ import annotations

import struct

import pytest
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from streams.faustcompat import records

PLACEHOLDER = "\x01\x02"  # a 2-byte UTF-8 header name to overwrite with raw bytes
#: A magic-2 record batch's header, base offset to record count (the records follow).
BATCH_HEADER_BYTES = 61


def batch_bytes(
    headers_per_record: list[list[tuple[str, bytes | None]]], base_offset: int = 0
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i, headers in enumerate(headers_per_record):
        builder.append(
            i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=b"v%d" % i, headers=headers
        )
    raw = bytearray(builder.build())
    struct.pack_into(">q", raw, 0, base_offset)
    return bytes(raw)


def corrupt_names(raw: bytes, name: bytes) -> bytes:
    """Put ``name`` (2 bytes) wherever the placeholder name is; fix the CRC."""
    data = bytearray(raw.replace(PLACEHOLDER.encode(), name))
    crc_at = DefaultRecordBatch.CRC_OFFSET if hasattr(DefaultRecordBatch, "CRC_OFFSET") else 17
    attributes_at = crc_at + 4
    struct.pack_into(">I", data, crc_at, calc_crc32c(bytes(data[attributes_at:])))
    return bytes(data)


def unpack(raw: bytes, fetch_offset: int = 0) -> list[object]:
    partition = PartitionRecords(
        TopicPartition("t", 0),
        records.TolerantMemoryRecords(raw),
        None,
        fetch_offset,
        None,
        None,
        True,
        0,
    )
    return list(partition)


def test_aiokafka_itself_refuses_a_header_name_that_is_not_utf8() -> None:
    """The upstream behaviour the wrapper exists for: if this passes no more, drop it."""
    raw = corrupt_names(batch_bytes([[], [(PLACEHOLDER, b"1")]]), b"\xfe\xff")
    partition = PartitionRecords(
        TopicPartition("t", 0), MemoryRecords(raw), None, 0, None, None, True, 0
    )
    with pytest.raises(UnicodeDecodeError):
        list(partition)


def test_every_record_of_the_batch_is_handed_over_once_in_order() -> None:
    raw = corrupt_names(
        batch_bytes(
            [
                [("a", b"1")],
                [(PLACEHOLDER, b"x"), ("fraudstream-sent-ms", b"5")],
                [],
                [("b", None)],
            ],
            base_offset=40,
        ),
        b"\xfe\xff",
    )
    got = unpack(raw, fetch_offset=40)
    assert [r.offset for r in got] == [40, 41, 42, 43]  # type: ignore[attr-defined]
    assert [r.value for r in got] == [b"v0", b"v1", b"v2", b"v3"]  # type: ignore[attr-defined]
    name, value = got[1].headers[0]  # type: ignore[attr-defined]
    assert name.encode("utf-8", "surrogateescape") == b"\xfe\xff"
    assert value == b"x"
    assert tuple(got[1].headers[1]) == ("fraudstream-sent-ms", b"5")  # type: ignore[attr-defined]
    assert list(got[3].headers) == [("b", None)]  # type: ignore[attr-defined]


def test_a_bad_first_record_and_a_fetch_offset_inside_the_batch() -> None:
    raw = corrupt_names(batch_bytes([[(PLACEHOLDER, b"")], [], [(PLACEHOLDER, b"")]]), b"\xc3\x28")
    assert [r.offset for r in unpack(raw)] == [0, 1, 2]  # type: ignore[attr-defined]
    assert [r.offset for r in unpack(raw, fetch_offset=2)] == [2]  # type: ignore[attr-defined]


def test_good_batches_are_read_by_aiokafkas_own_batch() -> None:
    raw = batch_bytes([[("a", b"1")], []]) + batch_bytes([[]], base_offset=2)
    tolerant = records.TolerantMemoryRecords(raw)
    batches = []
    while tolerant.has_next():
        batches.append(tolerant.next_batch())
    assert all(isinstance(b, records.TolerantBatch) for b in batches)
    assert [r.offset for r in unpack(raw)] == [0, 1, 2]  # type: ignore[attr-defined]


@given(
    st.lists(
        st.lists(
            st.tuples(st.binary(min_size=2, max_size=2), st.binary(max_size=8) | st.none()),
            max_size=3,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_two_byte_header_names_are_handed_over_as_sent(
    names: list[list[tuple[bytes, bytes | None]]],
) -> None:
    """Whatever bytes a producer puts in a header name, the worker gets each record, once."""
    headers = [[(PLACEHOLDER, value) for _, value in record] for record in names]
    raw = bytearray(batch_bytes(headers))
    # Overwrite the placeholders one by one, in order, with the wanted names. The search
    # starts after the batch's header, whose CRC may hold the placeholder's two bytes.
    at = BATCH_HEADER_BYTES
    for record in names:
        for name, _ in record:
            at = raw.index(PLACEHOLDER.encode(), at)
            raw[at : at + 2] = name
            at += 2
    raw = bytearray(corrupt_names(bytes(raw), b"\x01\x02"))
    got = unpack(bytes(raw))
    assert [r.offset for r in got] == list(range(len(names)))  # type: ignore[attr-defined]
    for record, sent in zip(got, names, strict=True):  # type: ignore[assignment]
        assert [
            (n.encode("utf-8", "surrogateescape"), v)
            for n, v in record.headers  # type: ignore[attr-defined]
        ] == sent


def test_install_replaces_the_fetchers_memory_records_once() -> None:
    before = aiokafka_fetcher.MemoryRecords
    try:
        records.install()
        records.install()
        assert aiokafka_fetcher.MemoryRecords is records.TolerantMemoryRecords
    finally:
        aiokafka_fetcher.MemoryRecords = before
