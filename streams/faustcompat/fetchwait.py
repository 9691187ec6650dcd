"""Make Faust's worker consumers fetch with the app's ``fetch_max_wait_ms`` and ``fetch_min_bytes``.

Upstream: faust-streaming 0.15.3, ``faust/transport/drivers/aiokafka.py``,
``AIOKafkaConsumerThread._create_worker_consumer``, which builds the aiokafka consumer
with ``fetch_max_wait_ms=1500`` hard-coded and no setting for it; and aiokafka 0.14.0,
``aiokafka/consumer/consumer.py``, ``AIOKafkaConsumer._fetch_max_wait_ms`` and
``_fetch_min_bytes`` (left at aiokafka's 1 by Faust), which the consumer hands to its
fetcher when it starts. `use_fetch_limits` wraps the first (once per process) so that the
consumer it returns, not yet started, carries the app's values instead. See
``Settings.fetch_max_wait_ms`` for why 1.5 s is too long here, and
``Settings.fetch_min_bytes`` for why 1 byte costs a core.
``tests/unit/faustcompat/test_fetchwait_contract.py`` fails when either changes.
"""

from __future__ import annotations

from typing import Any, Final

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

#: Marks the installed wrapper, so a second app does not wrap it again.
_INSTALLED: Final = "_fraudstream_fetch_wait"
#: Where the app keeps its limits for the wrapper to read: (max wait ms, min bytes).
_APP_ATTRIBUTE: Final = "fraudstream_fetch_limits"


def use_fetch_limits(app: Any, max_wait_ms: int, min_bytes: int) -> None:
    """Make the worker consumer of ``app`` wait for ``min_bytes``, at most ``max_wait_ms``."""
    setattr(app, _APP_ATTRIBUTE, (max_wait_ms, min_bytes))
    _install()


def _install() -> None:
    """Wrap ``AIOKafkaConsumerThread._create_worker_consumer`` (once per process)."""
    original = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, _INSTALLED, False):
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        limits = getattr(self.app, _APP_ATTRIBUTE, None)
        if limits is not None:
            consumer._fetch_max_wait_ms, consumer._fetch_min_bytes = limits
        return consumer

    setattr(create, _INSTALLED, True)
    AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]
