"""What the agents send: dead-letter records, forwards, scores and alerts, as bytes.

Encoding is on the hot path (a score record per transaction), so records are built as
plain dicts in their contract's field order and encoded with orjson (about 4 us for a
20-feature score record, against 35 us with the standard library's ``json`` and more
through ``faust.Record.dumps``). The unit tests decode every output with the published
contracts (``streams.contracts``), so the fast path cannot drift from the schemas.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

import orjson
from faust.types import EventT

from features.online import EntityState
from models.explain import Reason
from streams.contracts import DecodeError
from streams.metrics import PipelineMetrics
from streams.records import SCHEMA_VERSION, Transaction, alert_id

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

#: ``producer.send(topic, key, value, partition, headers)``: queue a message; delivery is
#: awaited by the table store's flush, not by the agents.
Send = Callable[[str, bytes | None, bytes | None, int | None, Headers | None], Awaitable[Any]]


def dlq_record(
    value: bytes | None,
    problem: DecodeError,
    *,
    topic: str,
    partition: int,
    offset: int,
) -> tuple[bytes | None, Headers]:
    """The dead-letter value and headers of a bad input record.

    The value is the original bytes, unchanged (cut to `MAX_DLQ_VALUE_BYTES` with a
    header giving the original length); the headers say what was wrong and where the
    record was, so it can be found, fixed and replayed.
    """
    headers = problem.dlq_headers()
    headers += [
        (SOURCE_TOPIC_HEADER, topic.encode()),
        (SOURCE_PARTITION_HEADER, str(partition).encode()),
        (SOURCE_OFFSET_HEADER, str(offset).encode()),
    ]
    if value is not None and len(value) > MAX_DLQ_VALUE_BYTES:
        headers.append((TRUNCATED_HEADER, str(len(value)).encode()))
        value = value[:MAX_DLQ_VALUE_BYTES]
    return value, headers


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
    return orjson.dumps(
        {
            "tx_id": transaction.tx_id,
            "customer_id": transaction.customer_id,
            "terminal_id": transaction.terminal_id,
            "tx_time": transaction.tx_time,
            "score": score,
            "threshold": threshold,
            "model_version": model_version,
            "features": features,
            "scored_at": scored_at,
            "schema_version": SCHEMA_VERSION,
        }
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
    """An ``alerts`` record (``streams.records.Alert``) as JSON bytes."""
    return orjson.dumps(
        {
            "alert_id": alert_id(transaction.tx_id, model_version),
            "tx_id": transaction.tx_id,
            "customer_id": transaction.customer_id,
            "terminal_id": transaction.terminal_id,
            "amount": str(transaction.amount),
            "currency": transaction.currency,
            "tx_time": transaction.tx_time,
            "score": score,
            "threshold": threshold,
            "model_version": model_version,
            "reasons": _reasons(reasons),
            "features": features,
            "emitted_at": emitted_at,
            "latency_ms": latency_ms,
            "schema_version": SCHEMA_VERSION,
        }
    )


def _reasons(reasons: Iterable[Reason]) -> list[dict[str, Any]]:
    return [
        {"feature": r.feature, "value": r.value, "contribution": r.contribution} for r in reasons
    ]


async def send_dead_letters(
    send: Send,
    topic: str,
    rejected: Iterable[tuple[EventT[Any], DecodeError]],
    metrics: PipelineMetrics,
) -> None:
    """Send each rejected event to the dead-letter topic and count it by problem."""
    for event, problem in rejected:
        await send_dead_letter(send, topic, event, problem, metrics)


async def send_dead_letter(
    send: Send,
    topic: str,
    event: EventT[Any],
    problem: DecodeError,
    metrics: PipelineMetrics,
    *,
    value: bytes | None = None,
) -> None:
    """Send one dead letter for ``event``: its bytes, or ``value`` for a part of it."""
    message = event.message
    value, headers = dlq_record(
        event.value if value is None else value,
        problem,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
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
