"""What the agents send: dead-letter records, forwards, scores and alerts, as bytes.

Scores and alerts are written by their contract's ``encode_fields`` (``streams.contracts``),
derived from the same field rules as the decoders and the published schemas: one dict in
the contract's field order encoded by orjson, no record built first (a score record per
transaction is on the hot path: about 2 us for 20 features, against 35 us with the
standard library's ``json``). The bytes are what ``Contract.encode`` writes for the
``Score`` or ``Alert`` record of the same values, which the unit tests check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from features.online import EntityState
from models.explain import Reason
from streams.contracts import ALERT, SCORE, DecodeError
from streams.metrics import PipelineMetrics
from streams.pipeline.inputs import InputRecord
from streams.records import Transaction, alert_id
from streams.tracecontext import TRACEPARENT

logger = logging.getLogger(__name__)

#: Dead-letter headers naming where a bad record came from.
SOURCE_TOPIC_HEADER: Final = "fraudstream-source-topic"
SOURCE_PARTITION_HEADER: Final = "fraudstream-source-partition"
SOURCE_OFFSET_HEADER: Final = "fraudstream-source-offset"
TRUNCATED_HEADER: Final = "fraudstream-truncated-from"
KEY_TRUNCATED_HEADER: Final = "fraudstream-key-truncated-from"
HEADERS_DROPPED_HEADER: Final = "fraudstream-headers-dropped"
# A dead letter must fit the producer's request limit (Faust's producer_max_request_size,
# 1,000,000 bytes): one the producer refuses cannot be sent at all, and its record would
# be skipped. The broker took the input whole (up to its 1,048,588 bytes), so each part
# of the copy has its own budget, 960,000 bytes in all with our headers, below the limit
# with room for the record's framing:
#: Largest original value copied; longer ones are cut and say their length.
MAX_DLQ_VALUE_BYTES: Final = 850_000
#: Largest key copied; longer ones are cut and say their length.
MAX_DLQ_KEY_BYTES: Final = 10_000
#: Most bytes of headers (names, values and `HEADER_FRAMING_BYTES` each); the input's own
#: headers are dropped, saying how many, when they and ours would be more.
MAX_DLQ_HEADER_BYTES: Final = 100_000
#: Longest reason or field name in our headers (a reason quotes input: field names).
MAX_DLQ_TEXT_BYTES: Final = 4_096
#: What a header costs in a record besides its name and value (length varints), at most.
HEADER_FRAMING_BYTES: Final = 10

Headers = list[tuple[str, bytes]]
#: Headers of a consumed record, as Faust gives them (values may be null).
InputHeaders = Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None

#: ``producer.send(topic, key, value, partition, headers)``: queue a message; delivery is
#: awaited by the table store's flush, not by the agents.
Send = Callable[[str, bytes | None, bytes | None, int | None, Headers | None], Awaitable[Any]]


#: Header names the dead-letter topic sets itself; an input's own copies (a dead letter
#: replayed as it was) are not carried over, so each name appears once.
DLQ_OWN_HEADERS: Final = frozenset(
    {
        "fraudstream-problem",
        "fraudstream-reason",
        "fraudstream-field",
        SOURCE_TOPIC_HEADER,
        SOURCE_PARTITION_HEADER,
        SOURCE_OFFSET_HEADER,
        TRUNCATED_HEADER,
        KEY_TRUNCATED_HEADER,
        HEADERS_DROPPED_HEADER,
    }
)


def dlq_record(
    value: bytes | None,
    problem: DecodeError,
    *,
    topic: str,
    partition: int,
    offset: int,
    headers: InputHeaders = None,
    traceparent: bytes | None = None,
    key: bytes | None = None,
) -> tuple[bytes | None, bytes | None, Headers]:
    """The dead-letter key, value and headers of a bad input record.

    The key and value are the original bytes, unchanged (cut to `MAX_DLQ_KEY_BYTES` and
    `MAX_DLQ_VALUE_BYTES` with a header giving the original length); the headers are the
    input's own, in their order (``traceparent`` and the like: the record can be replayed
    as it was once fixed), followed by ours saying what was wrong and where the record
    was. A ``traceparent`` given replaces the input's (a forwarded row's dead letter
    carries its transaction's trace, not its forward message's). Input headers that would
    take the headers past `MAX_DLQ_HEADER_BYTES` are dropped, and
    `HEADERS_DROPPED_HEADER` says how many: the record at its source topic, partition and
    offset still has them, and the dead letter fits the producer's request limit.
    """
    theirs = original_headers(headers)
    if traceparent is not None:
        theirs = [header for header in theirs if header[0] != TRACEPARENT]
    ours: Headers = [(name, _cut_text(text)) for name, text in problem.dlq_headers()]
    ours += [
        (SOURCE_TOPIC_HEADER, topic.encode()),
        (SOURCE_PARTITION_HEADER, str(partition).encode()),
        (SOURCE_OFFSET_HEADER, str(offset).encode()),
    ]
    if key is not None and len(key) > MAX_DLQ_KEY_BYTES:
        ours.append((KEY_TRUNCATED_HEADER, str(len(key)).encode()))
        key = key[:MAX_DLQ_KEY_BYTES]
    if value is not None and len(value) > MAX_DLQ_VALUE_BYTES:
        ours.append((TRUNCATED_HEADER, str(len(value)).encode()))
        value = value[:MAX_DLQ_VALUE_BYTES]
    trace = [] if traceparent is None else [(TRACEPARENT, traceparent)]
    if headers_size(theirs) + headers_size(trace) + headers_size(ours) > MAX_DLQ_HEADER_BYTES:
        ours.append((HEADERS_DROPPED_HEADER, str(len(theirs)).encode()))
        theirs = []
    return key, value, theirs + trace + ours


def headers_size(headers: Sequence[tuple[str, bytes | None]]) -> int:
    """Bytes the headers take in a record, framing included (at most)."""
    return sum(
        len(name.encode("utf-8", "surrogateescape")) + len(value or b"") + HEADER_FRAMING_BYTES
        for name, value in headers
    )


def _cut_text(text: bytes) -> bytes:
    return text if len(text) <= MAX_DLQ_TEXT_BYTES else text[:MAX_DLQ_TEXT_BYTES] + b"..."


def original_headers(headers: InputHeaders) -> Headers:
    """An input record's headers as they can be sent again.

    A header name that is not UTF-8 reaches us with lone surrogates in place of its
    bytes (``streams.faustcompat.records``); Kafka clients send names as UTF-8 only, so
    such a name is sent with those bytes written as backslash escapes (byte FE as the four
    characters backslash, x, f, e). A null value stays null.
    """
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: Headers = []
    for name, value in items:
        if name in DLQ_OWN_HEADERS:
            continue
        if not name.isascii():
            name = _sendable_name(name)
        out.append((name, value))  # type: ignore[arg-type]  # null values are sent as such
    return out


def _sendable_name(name: str) -> str:
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that no undecodable byte stands for
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


_encode_score: Final = SCORE.encode_fields
_encode_alert: Final = ALERT.encode_fields


def score_value(
    transaction: Transaction,
    *,
    score: float,
    threshold: float,
    model_version: str,
    features: dict[str, float],
    scored_at: int,
) -> bytes:
    """A ``scores`` record (``streams.records.Score``) as JSON bytes."""
    return _encode_score(
        tx_id=transaction.tx_id,
        customer_id=transaction.customer_id,
        terminal_id=transaction.terminal_id,
        tx_time=transaction.tx_time,
        score=score,
        threshold=threshold,
        model_version=model_version,
        features=features,
        scored_at=scored_at,
    )


def alert_value(
    transaction: Transaction,
    *,
    score: float,
    threshold: float,
    model_version: str,
    reasons: Sequence[Reason],
    features: dict[str, float],
    emitted_at: int,
    latency_ms: int,
) -> bytes:
    """An ``alerts`` record (``streams.records.Alert``) as JSON bytes.

    ``reasons`` are written by the ``AlertReason`` contract: a ``Reason`` has its fields.
    """
    return _encode_alert(
        alert_id=alert_id(transaction.tx_id, model_version),
        tx_id=transaction.tx_id,
        customer_id=transaction.customer_id,
        terminal_id=transaction.terminal_id,
        amount=transaction.amount,
        currency=transaction.currency,
        tx_time=transaction.tx_time,
        score=score,
        threshold=threshold,
        model_version=model_version,
        reasons=reasons,
        features=features,
        emitted_at=emitted_at,
        latency_ms=latency_ms,
    )


async def send_dead_letters(
    send: Send,
    topic: str,
    rejected: Iterable[tuple[InputRecord, DecodeError]],
    metrics: PipelineMetrics,
) -> None:
    """Send each rejected event to the dead-letter topic and count it by problem."""
    for event, problem in rejected:
        await send_dead_letter(send, topic, event, problem, metrics)


async def send_dead_letter(
    send: Send,
    topic: str,
    event: InputRecord,
    problem: DecodeError,
    metrics: PipelineMetrics,
    *,
    value: bytes | None = None,
    traceparent: bytes | None = None,
) -> None:
    """Send one dead letter for ``event``: its bytes, or ``value`` for a part of it.

    ``traceparent``, if given, replaces the event's own (`dlq_record`).
    """
    message = event.message
    key, value, headers = dlq_record(
        event.value if value is None else value,
        problem,
        key=event.key,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        headers=message.headers,
        traceparent=traceparent,
    )
    await send(topic, key, value, None, headers)
    metrics.dlq.labels(problem=str(problem.problem)).inc()


def decode_state(entity: str, key: bytes, raw: bytes | None) -> EntityState:
    """A stored window state; a missing or unreadable one reads as empty (logged).

    An unreadable state (a bug, or bytes written by something else) must not stop the
    batch: its entity starts afresh, which is exact again after one retention.
    """
    if raw is None:
        return EntityState()
    try:
        return EntityState.from_bytes(raw)
    except ValueError:
        logger.exception("%s %r: unreadable state, starting it afresh", entity, key)
        return EntityState()
