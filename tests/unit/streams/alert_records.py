"""Alert records built from a scored transaction, as the tests expect the workers' alerts.

The workers write alerts' JSON directly (``streams.pipeline.outputs``); the tests compare
it with these records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streams.records import Alert, AlertReason, Transaction, alert_id


def make_alert(
    transaction: Transaction,
    *,
    score: float,
    threshold: float,
    model_version: str,
    reasons: Sequence[AlertReason],
    features: Mapping[str, float],
    emitted_at: int,
    latency_ms: int,
) -> Alert:
    """Build the alert for a scored transaction, its id derived by ``alert_id()``.

    Args:
        transaction: The scored transaction.
        score: The model's fraud probability.
        threshold: The threshold the score reached.
        model_version: The registry version of the model.
        reasons: The top features behind the score, most important first.
        features: The feature vector the model saw.
        emitted_at: Wall-clock send time, epoch milliseconds.
        latency_ms: Milliseconds from the transaction entering Kafka to ``emitted_at``.

    Returns:
        The alert, ready to send.
    """
    return Alert(
        alert_id=alert_id(transaction.tx_id, model_version),
        tx_id=transaction.tx_id,
        customer_id=transaction.customer_id,
        terminal_id=transaction.terminal_id,
        amount=transaction.amount,
        currency=transaction.currency,
        tx_time=transaction.tx_time,
        score=float(score),
        threshold=float(threshold),
        model_version=model_version,
        reasons=list(reasons),
        features=dict(features),
        emitted_at=emitted_at,
        latency_ms=latency_ms,
    )
