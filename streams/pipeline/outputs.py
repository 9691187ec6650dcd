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
#: Largest original value copied to the dead-letter topic: below the producer's request
#: limit (1 MB), leaving room for the headers. Longer values are cut and say so.
MAX_DLQ_VALUE_BYTES: Final = 900_000

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
) -> tuple[bytes | None, Headers]:
    """The dead-letter value and headers of a bad input record.

    The value is the original bytes, unchanged (cut to `MAX_DLQ_VALUE_BYTES` with a
    header giving the original length); the headers are the input's own, in their order
    (``traceparent`` and the like: the record can be replayed as it was once fixed),
    followed by ours saying what was wrong and where the record was. A ``traceparent``
    given replaces the input's (a forwarded row's dead letter carries its transaction's
    trace, not its forward message's).
    """
    out = original_headers(headers)
    if traceparent is not None:
        out = [header for header in out if header[0] != TRACEPARENT]
        out.append((TRACEPARENT, traceparent))
    out += problem.dlq_headers()
    out += [
        (SOURCE_TOPIC_HEADER, topic.encode()),
        (SOURCE_PARTITION_HEADER, str(partition).encode()),
        (SOURCE_OFFSET_HEADER, str(offset).encode()),
    ]
    if value is not None and len(value) > MAX_DLQ_VALUE_BYTES:
        out.append((TRUNCATED_HEADER, str(len(value)).encode()))
        value = value[:MAX_DLQ_VALUE_BYTES]
    return value, out


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
    value, headers = dlq_record(
        event.value if value is None else value,
        problem,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        headers=message.headers,
        traceparent=traceparent,
    )
    await send(topic, event.key, value, None, headers)
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
