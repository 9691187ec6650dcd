"""Stops a producer's retries at its first failed produce request, so no retry can duplicate.

Why the idempotent producer alone wrote events twice. Its retries are safe only while
the broker remembers the producer (its id, epoch and the last five batches' sequence
numbers per partition): a retried batch that was in fact written is then answered
"duplicate" instead of appended again. A broker forgets a producer whose last batch's
*timestamp* is older than ``producer.id.expiration.ms`` (default one day), and it
applies that test when it reloads its producer state after a restart. Replayed events
carry their historical event time as Kafka timestamp (years old), so a restarted broker
has forgotten the replay's producer at once, and for a producer it does not know it
accepts any sequence number (KIP-360). The batch in flight when the broker was killed
(written, but not acknowledged) was retried by aiokafka after the restart and appended a
second time. Measured on a one-node broker of this project: the same batch re-sent with
the same producer id, epoch and sequence after a SIGKILL and restart is appended again
when its timestamps are from 2018, and answered as a duplicate when they are current.

So the replay does not let aiokafka retry a produce request that may have reached a
broker. ``ProduceFence`` wraps the producer's client: the first produce request that
fails (connection lost, refused, timed out) trips it, and from then on every produce
request of that producer fails at once, without being sent, with ``ProduceFencedError``,
which aiokafka does not retry. The replay then drops the producer, waits for the
broker, reads what each partition holds (``streams.replay.tails``) and sends the rest
with a new producer. The idempotent sequence still guards what it can guard: ordering,
and retries of a broker's own retriable answers (not leader, timed out in the ISR)
while it runs.

The requests are intercepted through ``streams.faustcompat.producerclient``, which
replaces the send method of the producer's aiokafka client (aiokafka offers no hook).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.protocol.produce import ProduceRequest

from streams.faustcompat import producerclient


class ProduceFencedError(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """A produce request not sent, or whose fate is unknown: the producer is fenced.

    Not retriable, so aiokafka fails the batch instead of sending it again.
    """

    retriable = False


class ProduceFence:
    """Fences a producer at its first failed produce request.

    Args:
        producer: The producer, before or after its start.

    Attributes:
        cause: The error that tripped the fence, None while it holds.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.cause: BaseException | None = None
        self._send = producerclient.replace_send(producer, self._guarded_send)

    @property
    def tripped(self) -> bool:
        """Whether a produce request failed: nothing more of this producer is sent."""
        return self.cause is not None

    async def _guarded_send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        if not isinstance(request, ProduceRequest):
            return await self._send(node_id, request, **kwargs)
        if self.cause is not None:
            raise ProduceFencedError(f"not sent: an earlier produce request failed ({self.cause})")
        try:
            return await self._send(node_id, request, **kwargs)
        except KafkaError as exc:
            self.cause = exc
            raise ProduceFencedError(f"{type(exc).__name__}: {exc}") from exc
