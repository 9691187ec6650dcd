"""The one promotion path: check a version, tell the live workers, record it in the registry.

``fraudstream model promote``, ``fraudstream train --promote`` and the training notebook
all call `promote`. Workers follow the model-control topic (`streams.modelcontrol`), so a
promotion written only to the registry's ``current.json`` would leave ``model list``
naming one version while every worker runs another; here the event is published first
and the registry then records that same event, so the two agree.

Order and failures:

1. The version is loaded as a worker would load it (artifact sha256, trusted types,
   features against the running feature spec): a version workers would refuse is
   refused here, and nothing changes.
2. The promotion is published to the model-control topic and acknowledged by the
   broker. No broker, or no topic: nothing changes (`BrokerUnavailableError`).
3. The registry records the published event (``current.json``, ``promotions.jsonl``).

``publish=False`` skips step 2 (offline use, no broker yet): workers then load the
version at start only when the topic holds no promotion, and callers must say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from features.spec import DEFAULT_FEATURES
from models.registry import ModelRegistry, Promotion, RegistryError
from streams.modelcontrol import publish_promotion
from streams.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Publishes a promotion and waits for the broker (`publish_promotion`; tests replace it).
Publisher = Callable[[Settings, Promotion], Awaitable[None]]


class PromotionNotRecordedError(RegistryError):
    """The promotion was published (workers switch) but the registry did not record it."""


def promote(
    settings: Settings,
    version: str,
    *,
    feature_names: Sequence[str] = DEFAULT_FEATURES.names,
    publish: bool = True,
) -> Promotion:
    """Promote ``version``: check it, publish it to the workers, record it in the registry.

    Callable from synchronous code and from a running event loop alike (a notebook
    kernel runs one): the publishing then runs on a thread of its own.

    Args:
        settings: Connection settings, topic names and the registry directory.
        version: The registry version to promote.
        feature_names: The running feature spec's names, in order.
        publish: False records the promotion in the registry only (see the module
            docstring): live workers are not told.

    Returns:
        The promotion, as published and recorded.

    Raises:
        RegistryError: The version would not load; nothing was changed.
        BrokerUnavailableError: No broker answers, or the model-control topic does not
            exist; nothing was changed.
        PublishUnconfirmedError: The broker stopped answering during delivery: the
            event may have reached the workers; the registry was not changed.
        PromotionNotRecordedError: Published, but the registry could not be written.
    """
    with quiet_kafka_logs(settings):
        return _run(promote_async(settings, version, feature_names=feature_names, publish=publish))


async def promote_async(
    settings: Settings,
    version: str,
    *,
    feature_names: Sequence[str] = DEFAULT_FEATURES.names,
    publish: bool = True,
    publisher: Publisher = publish_promotion,
) -> Promotion:
    """`promote` for async callers; ``publisher`` replaces the Kafka publishing in tests."""
    registry = ModelRegistry(settings.model_registry_dir)
    # What every worker will do; off the event loop, since skops loading takes a while.
    await asyncio.to_thread(registry.load, version, feature_names)
    event = registry.next_promotion(version)
    if not publish:
        return registry.record(event)
    await publisher(settings, event)
    try:
        return registry.record(event)
    except RegistryError as exc:
        raise PromotionNotRecordedError(
            f"published {version} to {settings.topic_names['model_control']} (live workers "
            f"switch to it), but the registry did not record it: {exc}"
        ) from None


@contextlib.contextmanager
def quiet_kafka_logs(settings: Settings) -> Iterator[None]:
    """Silence aiokafka's own connection errors: the one-line failure message says it all.

    Kept at debug level, where every detail is wanted.
    """
    kafka_logger = logging.getLogger("aiokafka")
    level = kafka_logger.level
    if settings.log_level != "debug":
        kafka_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        kafka_logger.setLevel(level)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, on a thread of its own if a loop already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="promote") as pool:
        return pool.submit(asyncio.run, coroutine).result()
