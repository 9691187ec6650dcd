"""Make the worker's Kafka producer idempotent, so a resent batch is never written twice.

Upstream: faust-streaming 0.15.3, ``faust/transport/drivers/aiokafka.py``,
``Producer._settings_extra``, which asks aiokafka for ``acks="all"`` and
``enable_idempotence=True`` only while the app is in a transaction (the
``exactly_once`` processing guarantee) and for nothing otherwise, and
``Producer._new_producer``, which merges what it returns into the arguments of every
``AIOKafkaProducer`` it makes. `install` replaces the first on the class (once per
process) so that it always asks for both. ``aiokafka 0.14.0`` then numbers each
partition's batches (``AIOKafkaProducer._txn_manager``), and the broker drops a batch
whose number it has already written. ``tests/unit/faustcompat/test_idempotence_contract.py``
fails when either changes.

Why: at least once, Faust's producer is not idempotent. When a broker dies after
appending a batch and before acknowledging it, aiokafka sends the batch again once the
broker is back, and the broker appends it again: the broker outage test found two
identical score records of two transactions, the same batch at offsets 139 and 141. The
scorer had written them once. An idempotent producer's resend is recognised by the
broker, which keeps the producers' sequence numbers with the log across its restart
(for ``producer.id.expiration.ms``, a day, after the producer's last batch: the worker's
records carry the time they are sent, so a running worker is never forgotten).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from faust.transport.drivers.aiokafka import Producer

#: Marks the installed replacement, so a second app does not install it again.
_INSTALLED: Final = "_fraudstream_idempotence"
#: What every producer of the worker asks aiokafka for (a transaction's too, as before).
IDEMPOTENT: Final[Mapping[str, Any]] = {"acks": "all", "enable_idempotence": True}


def install() -> None:
    """Make every Faust aiokafka producer made from now on idempotent (once per process)."""
    if getattr(Producer._settings_extra, _INSTALLED, False):
        return

    def settings_extra(self: Any) -> Mapping[str, Any]:
        return IDEMPOTENT

    setattr(settings_extra, _INSTALLED, True)
    Producer._settings_extra = settings_extra  # type: ignore[method-assign]
