"""Model control: promotions as events on a Kafka topic, followed by every live worker.

The one promotion path (`streams.promotion`, behind ``fraudstream model promote``,
``train --promote`` and the training notebook) publishes a `Promotion` to the
model-control topic (`publish_promotion`); each worker runs a `ModelFollower` that reads
every event of that topic and swaps its model without a restart. The topic is a
broadcast, not a work queue: each follower reads all of its partitions itself
(``group_id=None`` and a manual ``assign``), so no worker can take an event away from
another.

A worker starts from the newest promotion on the topic, then the registry's
(``current.json``, ``promotions.jsonl``); when that version does not load, it walks back
that history to the newest version that does (`streams.modelfallback`), and reports the
fallback until a promotion that loads arrives, or until the refused version loads: it is
tried again every ``model_retry_interval_s``, so an artifact repaired in the registry is
picked up without a promotion (a promotion applied meanwhile supersedes the retry). It
then follows the events after the topic's end.

Every version is loaded and verified by the registry (artifact sha256, features against
the running spec, trusted types) in a thread, since skops loading takes long enough to
stall the event loop; only a model that passed is handed to ``activate``, on the
event-loop thread, so the caller's swap falls between two micro-batches. A version that
fails keeps the current model active: a bad promotion must not stop scoring. Every failed
load, retries included, is reported to ``on_load_failure`` (the worker's load-failure
counter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from models.registry import LoadedModel, ModelRegistry, Promotion, RegistryError
from streams.kafka import BrokerUnavailableError, client_options
from streams.modelfallback import Fallback, Refusal, ReportedReasons, start_candidates
from streams.settings import Settings

logger = logging.getLogger(__name__)

#: The key of every promotion event: one key, so all promotions share a partition and
#: keep their order. Records with another key are not promotions and are ignored.
PROMOTION_KEY: Final = b"model"

#: How long connecting and checking the topic may take before the broker counts as gone.
CONNECT_TIMEOUT_S: Final = 5.0
#: How long the broker may take to acknowledge a promotion once it is handed over.
DELIVERY_TIMEOUT_S: Final = 10.0
#: How long reading the latest promotion at start may take.
INITIAL_READ_TIMEOUT_S: Final = 15.0
#: Pause after an unexpected consumer error, so a persistent one does not spin.
ERROR_BACKOFF_S: Final = 1.0
#: Pause between attempts to connect when `ModelFollower.follow` starts without a broker.
RECONNECT_BACKOFF_S: Final = 5.0


class PublishUnconfirmedError(BrokerUnavailableError):
    """The broker stopped answering after the event was handed over: it may be published."""


async def publish_promotion(settings: Settings, promotion: Promotion) -> None:
    """Publish a promotion to the model-control topic and wait until the broker has it.

    The producer is idempotent with ``acks=all``: a retry after a lost acknowledgement
    cannot publish the event twice, and a delivered event survives a broker failover.

    Args:
        settings: Connection settings and the topic names.
        promotion: The event.

    Raises:
        BrokerUnavailableError: No broker answers, or the model-control topic does not
            exist; nothing was published.
        PublishUnconfirmedError: The broker stopped answering during delivery; the event
            may or may not be on the topic.
    """
    topic = settings.topic_names["model_control"]
    await _partitions(settings, topic)  # refuse a missing topic rather than auto-create it
    producer = AIOKafkaProducer(
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=int(DELIVERY_TIMEOUT_S * 1000),
        **client_options(settings),
    )
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await producer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise _unavailable(settings, exc) from None
        try:
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                await producer.send_and_wait(
                    topic, value=promotion.to_json().encode(), key=PROMOTION_KEY
                )
        except (KafkaError, OSError, TimeoutError) as exc:
            raise PublishUnconfirmedError(
                f"the broker at {settings.kafka_bootstrap_servers} did not confirm the "
                f"promotion of {promotion.version} to {topic} ({_describe(exc)})"
            ) from None
    finally:
        await producer.stop()
    logger.info("published the promotion of %s to %s", promotion.version, topic)


class ModelFollower:
    """Keeps one worker's model in step with the promotions on the model-control topic.

    Call `load_initial` once, then run `follow` as a task for the worker's lifetime.

    Args:
        settings: Connection settings, topic names and the registry directory.
        feature_names: The running feature spec's names, in order: a model trained on
            other features is refused.
        activate: Called on the event-loop thread with each newly verified model; it
            should only swap a reference (it runs between the worker's batches).
        on_load_failure: Called with the version and the reason each time a version
            fails to load or activate (a metric).
        on_fallback: Called with the new state each time it changes: a `Fallback` while
            an older version scores because the newest promotion was refused, else None.
        retry_interval_s: How often `follow` tries the refused newest promotion again;
            ``settings.model_retry_interval_s`` when None. The `retry_interval_s`
            attribute can be changed before `follow` starts.

    Attributes:
        lock: Held while the active model, the refusal and the callbacks' metrics change
            together. A reader in another thread (the worker's ``/ready`` handler) takes
            it to see them from one moment: without it, a probe could find the fallback
            model active and its refusal not yet recorded.
    """

    def __init__(
        self,
        settings: Settings,
        feature_names: Sequence[str],
        activate: Callable[[LoadedModel], None],
        *,
        on_load_failure: Callable[[str, str], None] | None = None,
        on_fallback: Callable[[Fallback | None], None] | None = None,
        retry_interval_s: float | None = None,
    ) -> None:
        self._settings = settings
        self._topic = settings.topic_names["model_control"]
        self._feature_names = tuple(feature_names)
        self._activate = activate
        self._on_load_failure = on_load_failure
        self._on_fallback = on_fallback
        self._registry = ModelRegistry(settings.model_registry_dir)
        self._positions: dict[TopicPartition, int] | None = None
        self._active: str | None = None
        self._refused: Refusal | None = None
        self._failures = 0
        self.retry_interval_s = (
            settings.model_retry_interval_s if retry_interval_s is None else retry_interval_s
        )
        # A retry's result stands only if no promotion was applied while it loaded: the
        # epoch counts promotions, and `_applying` names the one being loaded.
        self._epoch = 0
        self._applying: str | None = None
        self._tried_at = 0.0  # monotonic time of the refused version's last load
        self._reported = ReportedReasons()
        self._fallback_reported: Fallback | None = None  # the last state given on_fallback
        self.lock = threading.RLock()

    @property
    def failures(self) -> int:
        """How many loads or promotions failed (malformed, unknown, refused, retried)."""
        return self._failures

    @property
    def active_version(self) -> str | None:
        """The version last handed to ``activate``; None before the first."""
        return self._active

    @property
    def refused(self) -> Refusal | None:
        """The newest promotion, when this worker could not load it; else None."""
        return self._refused

    @property
    def fallback(self) -> Fallback | None:
        """Set while an older version scores because the newest promotion was refused."""
        if self._refused is None or self._active in (None, self._refused.version):
            return None  # (the refused version active: swapped in, the refusal not yet ended)
        return Fallback(self._active, self._refused.version, self._refused.reason)

    async def load_initial(self) -> LoadedModel | None:
        """Load and activate the newest promoted version that loads.

        The newest promotion on the topic comes first; the registry's ``current.json``
        (a promotion recorded with ``--no-publish``, or from before model control
        existed) counts when the topic holds none. When that version does not load,
        the older promotions are tried, newest first (`start_candidates`), and the
        worker reports the fallback (`fallback`) until a promotion that loads arrives.
        `follow` then starts after the records read here.

        Returns:
            The activated model, or None when neither the topic nor the registry names
            a version.

        Raises:
            BrokerUnavailableError: No broker answers, or the topic does not exist.
            RegistryError: No promoted version loads; nothing is active, and `follow`
                still picks up the next promotion.
        """
        topic = await self._read_history()
        current, history = self._registry_promotions()
        candidates = start_candidates(
            topic,
            current,
            history,
            topic_name=self._topic,
            registry_name=str(self._registry.root),
        )
        if not candidates:
            logger.info("no model promoted yet (%s is empty, no current.json)", self._topic)
            return None
        newest = candidates[0]
        refusal: Refusal | None = None
        for candidate in candidates:
            try:
                model = await asyncio.to_thread(
                    self._registry.load, candidate.version, self._feature_names
                )
                with self.lock:  # the fallback is seen with its model, never after it
                    self._swap(model)
                    self._set_refused(refusal)
            except Exception as exc:  # a refused artifact, a bug or an OS failure alike
                reason = _describe(exc)
                self._failures += 1
                self._load_failed(candidate.version, reason)
                logger.error(
                    "cannot load %s, promoted on %s: %s",
                    candidate.version,
                    candidate.source,
                    reason,
                )
                refusal = refusal or Refusal(newest.version, reason)
                continue
            if candidate is not newest:
                logger.error(
                    "model %s, the newest promotion, does not load: scoring with %s, the "
                    "newest earlier promotion that does (%s); promote a version that loads",
                    newest.version,
                    candidate.version,
                    candidate.source,
                )
            return model
        assert refusal is not None  # every candidate failed, the newest first
        self._set_refused(refusal)
        raise RegistryError(
            f"none of the {len(candidates)} promoted versions loads; the newest, "
            f"{newest.version}: {refusal.reason}"
        )

    async def follow(self) -> None:
        """Apply every promotion published after `load_initial`'s position, until cancelled.

        A broker that goes away is waited for (aiokafka reconnects; a broker missing when
        this starts is retried every `RECONNECT_BACKOFF_S`); the consumer is closed when
        the task is cancelled. Meanwhile a refused newest promotion is tried again every
        `retry_interval_s` (`retry_refused`), broker or not.

        Raises:
            RuntimeError: `load_initial` has not completed.
        """
        if self._positions is None:
            raise RuntimeError("call load_initial() before follow()")
        retrying = asyncio.create_task(self._retry_periodically(), name="model-retry")
        try:
            await self._follow(self._positions)
        finally:
            retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retrying

    async def _follow(self, positions: dict[TopicPartition, int]) -> None:
        """Read the control topic from ``positions`` on and apply each promotion."""
        while True:
            try:
                consumer = await self._started_consumer()
                break
            except BrokerUnavailableError as exc:
                logger.warning("model control: %s; retrying in %.0f s", exc, RECONNECT_BACKOFF_S)
                await asyncio.sleep(RECONNECT_BACKOFF_S)
        try:
            consumer.assign(list(positions))
            for partition, offset in positions.items():
                consumer.seek(partition, offset)
            while True:
                try:
                    batch = await consumer.getmany(timeout_ms=1000)
                except KafkaError as exc:
                    logger.warning("model control: reading %s failed: %s", self._topic, exc)
                    await asyncio.sleep(ERROR_BACKOFF_S)
                    continue
                for record in _in_time_order(batch):
                    await self._apply(record)
                    positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
        finally:
            await consumer.stop()

    async def _apply(self, record: Any) -> None:
        """Load, verify and activate the version one control record names."""
        if record.key != PROMOTION_KEY:
            logger.debug("model control: ignored a record with key %r", record.key)
            return
        try:
            promotion = _parse(record.value)
        except RegistryError as exc:
            self._reject(f"record at offset {record.offset}", str(exc))
            return
        self._epoch += 1  # a retry loading meanwhile is superseded
        if promotion.version == self._active:
            logger.info("model %s is already active; promotion ignored", promotion.version)
            self._set_refused(None)  # promoted again (a rollback): no longer a fallback
            return
        self._applying = promotion.version
        try:
            model = await asyncio.to_thread(
                self._registry.load, promotion.version, self._feature_names
            )
        except RegistryError as exc:
            self._refuse(promotion.version, str(exc))
            return
        except Exception as exc:  # a bug or an OS failure must not end the follower
            self._refuse(promotion.version, _describe(exc))
            return
        finally:
            self._applying = None
        with self.lock:  # the new model and the fallback's end are seen together
            try:
                self._swap(model)
            except Exception as exc:  # the caller's swap failed: its old model is in use
                self._refuse(
                    promotion.version,
                    f"activate() raised {type(exc).__name__}: {_describe(exc)}",
                )
                return
            self._set_refused(None)  # the newest promotion is the active model

    async def retry_refused(self) -> bool:
        """Try once more to load the refused newest promotion; swap to it if it loads now.

        The swap is a promotion's (``activate``, then the fallback ends). A promotion
        applied while the retry loads supersedes it: its model is dropped, since it may
        no longer be the newest. A failure is counted like any other (``on_load_failure``)
        and logged once per distinct reason.

        Returns:
            True when the refused version is now active.
        """
        refused = self._refused
        if refused is None:
            return False
        self._tried_at = time.monotonic()  # the next retry is an interval from now
        if self._applying is not None:
            return False  # a promotion being loaded decides which version is the newest
        epoch = self._epoch
        try:
            model = await asyncio.to_thread(
                self._registry.load, refused.version, self._feature_names
            )
        except Exception as exc:  # a refused artifact, a bug or an OS failure alike
            self._retry_failed(refused.version, _describe(exc), epoch)
            return False
        if epoch != self._epoch:
            logger.info(
                "model control: %s loads now, but a newer promotion arrived meanwhile",
                refused.version,
            )
            return False
        with self.lock:  # the new model and the fallback's end are seen together
            try:
                self._swap(model, f" ({refused.version}, the newest promotion, loads now)")
            except Exception as exc:  # the caller's swap failed: its old model is in use
                reason = f"activate() raised {type(exc).__name__}: {_describe(exc)}"
                self._retry_failed(refused.version, reason, epoch)
                return False
            self._set_refused(None)
        return True

    def _retry_failed(self, version: str, reason: str, epoch: int) -> None:
        """A retry failed: count it; report it unless superseded or already reported."""
        self._failures += 1
        if epoch != self._epoch:
            self._load_failed(version, reason)
            return  # a newer promotion was applied: this version is not the newest now
        if self._reported.first(version, reason):
            logger.warning(
                "model control: %s, the newest promotion, still does not load: %s; %s, "
                "retrying every %g s",
                version,
                reason,
                f"model {self._active} stays active" if self._active else "no model is active",
                self.retry_interval_s,
            )
        with self.lock:  # the count and the refusal are seen together
            self._load_failed(version, reason)
            self._set_refused(Refusal(version, reason))  # the reason may have changed

    async def _retry_periodically(self) -> None:
        """Call `retry_refused` `retry_interval_s` after each load of the refused version."""
        while True:
            if self._refused is None:
                wait = self.retry_interval_s
            else:
                wait = self._tried_at + self.retry_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self.retry_refused()
            except Exception:  # a failing callback must not end the retries
                logger.exception("model control: retrying the refused model failed")

    def _swap(self, model: LoadedModel, note: str = "") -> None:
        """Hand a verified model to the worker; it is active from now on."""
        self._activate(model)
        previous, self._active = self._active, model.metadata.version
        logger.info("model %s -> %s active%s", previous or "none", self._active, note)

    def _refuse(self, version: str, reason: str) -> None:
        """A promoted version did not load: count it, keep the model, report a fallback."""
        with self.lock:  # the count and the refusal are seen together
            self._load_failed(version, reason)
            self._set_refused(Refusal(version, reason))
        self._reject(version, reason)

    def _reject(self, what: str, reason: str) -> None:
        self._failures += 1
        logger.warning(
            "model control: cannot activate %s: %s; model %s stays active",
            what,
            reason,
            self._active or "none",
        )

    def _load_failed(self, version: str, reason: str) -> None:
        if self._on_load_failure is not None:
            self._on_load_failure(version, reason)

    def _set_refused(self, refused: Refusal | None) -> None:
        """Record the newest promotion's refusal (or its end); report a changed fallback."""
        self._refused = refused
        if refused is not None:  # its next retry is an interval after this load
            self._tried_at = time.monotonic()
            self._reported.first(refused.version, refused.reason)
        after = self.fallback
        if after != self._fallback_reported:
            self._fallback_reported = after
            if self._on_fallback is not None:
                self._on_fallback(after)

    def _registry_promotions(self) -> tuple[Promotion | None, list[Promotion]]:
        """The registry's ``current.json`` and history; nothing when they are unreadable.

        An unreadable registry file must not keep a worker from the topic's promotions.
        """
        try:
            current = self._registry.current()
        except RegistryError as exc:
            logger.warning("model control: ignoring the registry's current.json: %s", exc)
            current = None
        try:
            history = self._registry.history()
        except (RegistryError, OSError) as exc:
            logger.warning("model control: ignoring the registry's promotions.jsonl: %s", exc)
            history = []
        return current, history

    async def _started_consumer(self) -> AIOKafkaConsumer:
        """A started consumer outside any group (every worker sees every event)."""
        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            # Only used if our position was deleted by retention: never replay old events.
            auto_offset_reset="latest",
            **client_options(self._settings),
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await consumer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            await consumer.stop()
            raise _unavailable(self._settings, exc) from None
        return consumer

    async def _read_history(self) -> list[Promotion]:
        """Every promotion on the topic, oldest first; records where `follow` starts."""
        partition_ids = await _partitions(self._settings, self._topic)
        partitions = [TopicPartition(self._topic, p) for p in partition_ids]
        consumer = await self._started_consumer()
        try:
            async with asyncio.timeout(INITIAL_READ_TIMEOUT_S):
                consumer.assign(partitions)
                beginnings = await consumer.beginning_offsets(partitions)
                ends = await consumer.end_offsets(partitions)
                records = [
                    record
                    for tp in partitions
                    if ends[tp] > beginnings[tp]
                    for record in await _promotions(consumer, tp, beginnings[tp], ends[tp])
                ]
        except (KafkaError, TimeoutError) as exc:
            raise _unavailable(self._settings, exc) from None
        finally:
            await consumer.stop()
        self._positions = dict(ends)
        return [_parse(record.value) for record in sorted(records, key=_time_order)]


async def _promotions(
    consumer: AIOKafkaConsumer, partition: TopicPartition, beginning: int, end: int
) -> list[Any]:
    """The records of a partition before ``end`` that parse as promotions, oldest first.

    The whole partition is read: the topic is compacted to one record per key and holds
    one record per promotion since the last compaction, so it stays small.
    """
    consumer.seek(partition, beginning)
    found = []
    while await consumer.position(partition) < end:
        batch = await consumer.getmany(partition, timeout_ms=500)
        for record in batch.get(partition, []):
            if record.offset < end and record.key == PROMOTION_KEY:
                try:
                    _parse(record.value)
                except RegistryError as exc:
                    logger.warning("model control: offset %d: %s", record.offset, exc)
                    continue
                found.append(record)
    return found


async def _partitions(settings: Settings, topic: str) -> list[int]:
    """The partition ids of a topic.

    Lists all topics rather than asking for this one: a metadata request naming a
    missing topic creates it on brokers that auto-create topics.

    Raises:
        BrokerUnavailableError: No broker answers, or the topic does not exist.
    """
    admin = AIOKafkaAdminClient(
        request_timeout_ms=int(CONNECT_TIMEOUT_S * 1000), **client_options(settings)
    )
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await admin.start()
            described = await admin.describe_topics()
    except (KafkaError, OSError, TimeoutError) as exc:
        raise _unavailable(settings, exc) from None
    finally:
        await admin.close()
    for entry in described:
        if entry["topic"] == topic and entry["partitions"]:
            return sorted(p["partition"] for p in entry["partitions"])
    raise BrokerUnavailableError(
        f"the model-control topic {topic} does not exist at "
        f"{settings.kafka_bootstrap_servers} (`fraudstream worker` declares it)"
    )


def _parse(value: bytes | None) -> Promotion:
    """A promotion from a record's value.

    Raises:
        RegistryError: Not a promotion record.
    """
    if value is None:
        raise RegistryError("malformed promotion record: no value")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise RegistryError("malformed promotion record: not UTF-8") from None
    promotion = Promotion.from_json(text)
    if not isinstance(promotion.version, str):
        raise RegistryError(f"malformed promotion record: version {promotion.version!r}")
    return promotion


def _in_time_order(batch: dict[TopicPartition, list[Any]]) -> list[Any]:
    """The records of a fetch, oldest first across partitions."""
    records = [record for records in batch.values() for record in records]
    return sorted(records, key=_time_order)


def _time_order(record: Any) -> tuple[int, int, int]:
    """Sort key of records across partitions: append time, then partition and offset."""
    return (record.timestamp, record.partition, record.offset)


def _unavailable(settings: Settings, exc: BaseException) -> BrokerUnavailableError:
    return BrokerUnavailableError(
        f"no Kafka broker answers at {settings.kafka_bootstrap_servers} ({_describe(exc)})"
    )


def _describe(exc: BaseException) -> str:
    """An exception in one line, with its type when its message is empty."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
