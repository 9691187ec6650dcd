"""Make Faust's worker consumers wait at most the app's ``fetch_max_wait_ms`` for new data.

Upstream: faust-streaming 0.15.3, ``faust/transport/drivers/aiokafka.py``,
``AIOKafkaConsumerThread._create_worker_consumer``, which builds the aiokafka consumer
with ``fetch_max_wait_ms=1500`` hard-coded and no setting for it; and aiokafka 0.14.0,
``aiokafka/consumer/consumer.py``, ``AIOKafkaConsumer._fetch_max_wait_ms``, which the
consumer hands to its fetcher when it starts. `use_fetch_max_wait` wraps the first (once
per process) so that the consumer it returns, not yet started, carries the app's value
instead. See ``Settings.fetch_max_wait_ms`` for why 1.5 s is too long here.
``tests/unit/faustcompat/test_fetchwait_contract.py`` fails when either changes.
"""

from __future__ import annotations

from typing import Any, Final

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

#: Marks the installed wrapper, so a second app does not wrap it again.
_INSTALLED: Final = "_fraudstream_fetch_wait"
#: Where the app keeps its wait for the wrapper to read.
_APP_ATTRIBUTE: Final = "fraudstream_fetch_max_wait_ms"


def use_fetch_max_wait(app: Any, wait_ms: int) -> None:
    """Make the worker consumer of ``app`` wait at most ``wait_ms`` for a fetch's data."""
    setattr(app, _APP_ATTRIBUTE, wait_ms)
    _install()


def _install() -> None:
    """Wrap ``AIOKafkaConsumerThread._create_worker_consumer`` (once per process)."""
    original = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, _INSTALLED, False):
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        wait = getattr(self.app, _APP_ATTRIBUTE, None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait
        return consumer

    setattr(create, _INSTALLED, True)
    AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]
