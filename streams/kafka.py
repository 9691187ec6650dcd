"""The Kafka edge: client options from the settings, topic declaration, broker checks.

Every aiokafka client fraudstream builds (admin, producer, consumer) and the Faust app take
their connection and security options from here, so a setting such as SASL over TLS
reaches all of them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnknownTopicOrPartitionError,
)
from aiokafka.helpers import create_ssl_context

from streams.kafkalog import install_outage_log
from streams.settings import Settings

logger = logging.getLogger(__name__)

#: Kafka protocol error codes that ``create_topics`` reports per topic.
_TOPIC_ALREADY_EXISTS = 36
_NO_ERROR = 0

#: How long a topic just created may stay unknown to the broker a request goes to.
TOPIC_KNOWN_WITHIN_S: Final = 10.0


#: Kafka header with the wall-clock time at which a producer handed the event to Kafka, as
#: epoch milliseconds in ASCII decimal (``b"1718031234567"``): readable in any language.
#: Event timestamps of replayed data are historical, so an alert's latency_ms is measured
#: from this header instead (DESIGN: Alert). Set by ``fraudstream replay`` on every event.
SENT_AT_HEADER: Final = "fraudstream-sent-ms"

#: Topic configs of the event topics (transactions, fraud-reports). Their Kafka timestamps
#: are event times (CreateTime, set by the producer), years old for a replayed dataset:
#: with time-based retention the broker would delete a replay within its next retention
#: check. Bound their size with retention.bytes or tiered storage instead.
EVENT_TOPIC_CONFIG: Final[Mapping[str, str]] = {
    "retention.ms": "-1",
    "message.timestamp.type": "CreateTime",
}


class _SaslTokenRedactor(logging.Filter):
    """Hides SASL tokens in aiokafka's DEBUG line for every request it sends.

    That line shows the whole request, and the token of a SaslAuthenticate request is,
    with the PLAIN mechanism, the username and the password in clear (SCRAM's is a
    salted proof). ``--log-level debug`` must not print the password.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_is_sasl_request(arg) for arg in args):
            record.args = tuple(
                f"{type(arg).__name__}(<redacted>)" if _is_sasl_request(arg) else arg
                for arg in args
            )
        return True


def _is_sasl_request(arg: object) -> bool:
    return type(arg).__name__.startswith("SaslAuthenticateRequest")


def _redact_sasl_tokens() -> None:
    """Install the redactor on aiokafka's connection logger, once per process."""
    log = logging.getLogger("aiokafka.conn")
    if not any(isinstance(existing, _SaslTokenRedactor) for existing in log.filters):
        log.addFilter(_SaslTokenRedactor())


# At import: every Kafka client of fraudstream (and Faust's, through streams.app) gets
# its options from this module, so none connects before this ran.
_redact_sasl_tokens()
install_outage_log()  # one warning per outage, not an error per retry (streams.kafkalog)


class BrokerUnavailableError(RuntimeError):
    """No broker answered at the configured bootstrap servers."""


class BrokerAuthenticationError(BrokerUnavailableError):
    """A broker answered but refused the SASL credentials of the settings.

    A ``BrokerUnavailableError`` all the same: the callers that report an unreachable
    broker in one line (the CLI commands) report this one alike, with its own reason.
    """


class _BootstrapFailures(logging.Filter):
    """Catches aiokafka's log line for each bootstrap server it could not use.

    aiokafka logs why a bootstrap server failed (connection refused, a TLS certificate
    not trusted, the SASL credentials refused, the connection closed by a broker that
    expected SASL), then raises a bare "Unable to bootstrap" that says none of it. The
    reasons are kept here for the error raised instead, and the lines are kept out of
    the log, where they would repeat that error.
    """

    #: How aiokafka's (pinned) client starts those lines; their arguments are
    #: (host, port, exception).
    PREFIXES: Final = ("Unable connect to", "Unable to request metadata from")

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[tuple[str, BaseException]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            str(record.msg).startswith(self.PREFIXES)
            and isinstance(args, tuple)
            and len(args) == 3
            and isinstance(args[2], BaseException)
        ):
            self.failures.append((f"{args[0]}:{args[1]}", args[2]))
            return False
        return True


@contextlib.contextmanager
def bootstrap_failures() -> Iterator[_BootstrapFailures]:
    """Collect aiokafka's bootstrap failures while a client starts."""
    catcher = _BootstrapFailures()
    log = logging.getLogger("aiokafka")  # the logger of aiokafka.client
    log.addFilter(catcher)
    try:
        yield catcher
    finally:
        log.removeFilter(catcher)


def unavailable_error(
    settings: Settings, exc: BaseException, failures: Iterable[tuple[str, BaseException]] = ()
) -> BrokerUnavailableError:
    """The error to raise when a client could not bootstrap, with the reason per server.

    Refused credentials get their own class and message: "no broker answers" would send
    the reader looking for a network problem.
    """
    servers = settings.kafka_bootstrap_servers
    failures = list(failures)
    refused = [error for _, error in failures if isinstance(error, SaslAuthenticationFailed)]
    if refused:
        return BrokerAuthenticationError(
            f"Kafka at {servers} refused the credentials of "
            f"{settings.kafka_sasl_username!r} ({refused[0]})"
        )
    reasons = "; ".join(f"{server}: {error}" for server, error in failures) or str(exc)
    return BrokerUnavailableError(f"no Kafka broker answers at {servers} ({reasons})")


@dataclass(frozen=True)
class TopicSpec:
    """A topic fraudstream owns: its name, partition count and topic-level configs."""

    name: str
    partitions: int
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """Build the TLS context the Kafka clients use, or None for plaintext protocols."""
    if not settings.kafka_uses_tls:
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
    )
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security keyword arguments shared by every aiokafka client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None  # checked by Settings
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def product_topics(settings: Settings) -> list[TopicSpec]:
    """The topics the product reads and writes, with the configured partition count.

    The event topics (transactions, fraud-reports) carry ``EVENT_TOPIC_CONFIG``. Every
    topic keyed by customer or terminal has the same partition count, so Faust assigns
    partition p of all of them to one worker (co-partitioning); the model-control topic
    has one partition.
    """
    names = settings.topic_names
    event_topics = {names["transactions"], names["fraud_reports"]}
    return [
        TopicSpec(
            name,
            # One partition keeps model promotions in one order for every worker.
            1 if role == "model_control" else settings.topic_partitions,
            settings.topic_replication_factor,
            config=_topic_config(role, name in event_topics),
        )
        for role, name in names.items()
    ]


#: Kafka headers as clients give them: (name, value) pairs, or a mapping (Faust).
Headers = Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None


def header_items(headers: Headers) -> Iterable[tuple[str, bytes]]:
    """The (name, value) pairs of headers in any of the forms clients give them."""
    if headers is None:
        return ()
    if type(headers) is list or type(headers) is tuple:
        return headers  # what aiokafka gives: tested first, a Mapping check costs more
    if isinstance(headers, Mapping):
        return headers.items()
    return headers


def _topic_config(role: str, is_event_topic: bool) -> dict[str, str]:
    if is_event_topic:
        return dict(EVENT_TOPIC_CONFIG)
    if role == "model_control":
        # Compacted on the one key promotions use: the latest promotion is kept forever
        # (workers start from it); the full history is the registry's promotions.jsonl.
        return {"cleanup.policy": "compact"}
    return {}


#: Most digits a ``SENT_AT_HEADER`` value may have (epoch milliseconds until 2286).
_SENT_AT_MAX_DIGITS: Final = 13


def sent_at_ms(headers: Headers) -> int | None:
    """Read the ``SENT_AT_HEADER`` of a consumed message; None when absent or malformed.

    Headers are untrusted input: a value may be null, not ASCII, or thousands of digits
    (``int`` refuses more than 4,300). Only 1 to 13 ASCII digits are read; whether the
    time is plausible is the caller's question (`plausible_sent_at_ms`).
    """
    for name, value in header_items(headers):
        if name == SENT_AT_HEADER:
            if (
                isinstance(value, bytes)
                and 0 < len(value) <= _SENT_AT_MAX_DIGITS
                and value.isdigit()
                and value.isascii()
            ):
                return int(value)
            return None
    return None


#: How far a producer's clock may be ahead of a worker's for its send times to be read.
SENT_AT_MAX_AHEAD_MS: Final = 60_000


def plausible_sent_at_ms(sent_ms: int | None, now_ms: int, max_age_ms: int) -> int | None:
    """A producer's send time if it can be one: not ahead, not older than ``max_age_ms``.

    A producer's clock set to 0, to 1970 or to 2099 would otherwise give an alert a
    latency of decades (or of zero) and drag the latency histogram with it. Clocks of
    different machines differ by milliseconds: up to `SENT_AT_MAX_AHEAD_MS` ahead is read
    (a latency below zero is then counted as zero by the caller).
    """
    if sent_ms is None or sent_ms > now_ms + SENT_AT_MAX_AHEAD_MS or now_ms - sent_ms > max_age_ms:
        return None
    return sent_ms


async def ensure_topics(settings: Settings, topics: Iterable[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Idempotent: existing topics are left as they are (a partition count that differs from
    the spec is logged, since changing it would move keys between partitions).

    Raises:
        BrokerUnavailableError: no broker answered (``BrokerAuthenticationError``: one
            answered but refused the credentials).
        KafkaError: the broker refused a topic for another reason than its existence.
    """
    wanted = list(topics)
    admin = AIOKafkaAdminClient(request_timeout_ms=15_000, **client_options(settings))
    with bootstrap_failures() as caught:
        try:
            await admin.start()
        except KafkaConnectionError as exc:
            await admin.close()
            raise unavailable_error(settings, exc, caught.failures) from exc
    try:
        existing = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
        missing = [t for t in wanted if t.name not in existing]
        for spec in wanted:
            have = existing.get(spec.name)
            if have is not None and have != spec.partitions:
                logger.warning(
                    "topic %s has %d partitions, the settings ask for %d; left unchanged",
                    spec.name,
                    have,
                    spec.partitions,
                )
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name=t.name,
                    num_partitions=t.partitions,
                    replication_factor=t.replication_factor,
                    topic_configs=dict(t.config),
                )
                for t in missing
            ]
        )
        created: list[str] = []
        for name, code, *rest in response.topic_errors:
            if code == _NO_ERROR:
                created.append(name)
            elif code != _TOPIC_ALREADY_EXISTS:
                message = rest[0] if rest else ""
                raise KafkaError(f"cannot create topic {name}: error {code} {message}")
        if created:
            await _wait_for_leaders(admin, created)
            logger.info("created topics %s", ", ".join(sorted(created)))
        return created
    finally:
        await admin.close()


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float = 30.0
) -> None:
    """Wait until every partition of the new topics has a leader.

    A topic is created asynchronously: producing to it at once meets
    NotLeaderForPartition retries, and consumers may see it without partitions.
    """
    async with asyncio.timeout(timeout_s):
        while True:
            described = await admin.describe_topics(topics)
            if all(
                t["error_code"] == _NO_ERROR
                and t["partitions"]
                and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            await asyncio.sleep(0.05)


@dataclass(frozen=True)
class TopicConfigs:
    """One topic's answer to DescribeConfigs.

    Attributes:
        name: The topic.
        error_code: The broker's error code for it (0: none).
        error_message: The broker's message with a non-zero code.
        configs: The configs asked for that have a value.
    """

    name: str
    error_code: int
    error_message: str | None
    configs: dict[str, str]


async def describe_topic_configs(
    admin: AIOKafkaAdminClient,
    names: Iterable[str],
    wanted: Iterable[str],
    *,
    known_within_s: float = TOPIC_KNOWN_WITHIN_S,
) -> list[TopicConfigs]:
    """The ``wanted`` configs of topics, asking again while a broker does not know one yet.

    Brokers learn of a new topic from the controller asynchronously, and each request
    goes to whichever broker the admin client picks: on a cluster, one that has not yet
    learned of a topic created a moment ago answers UNKNOWN_TOPIC_OR_PARTITION for it.
    That answer is repeated for ``known_within_s``, then returned as it is, like any
    other error.
    """
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, configs=dict.fromkeys(wanted))
        for name in names
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + known_within_s
    while True:
        responses = await admin.describe_configs(resources)
        described = [
            TopicConfigs(
                name,
                code,
                message,
                {entry[0]: entry[1] for entry in entries if entry[1] is not None},
            )
            for response in responses
            for code, message, _type, name, entries, *_ in response.resources
        ]
        unknown = [d.name for d in described if d.error_code == UnknownTopicOrPartitionError.errno]
        if not unknown or loop.time() >= deadline:
            return described
        logger.debug("topics %s not known yet to the broker asked; asking again", unknown)
        await asyncio.sleep(0.1)


#: Bytes a worker's record batches keep under a topic's max.message.bytes. aiokafka's
#: batch builder never passes its size, header included, but with a lone record larger
#: than it (which the broker refuses anyway): this is a margin, not a correction.
BATCH_HEADROOM: Final = 1024


async def producer_batch_bytes(settings: Settings) -> int:
    """The record batch size for a worker's producer: the setting, kept under every topic's limit.

    A worker produces to every product topic (outputs, forwards, dead letters, and re-routed
    records to the input topics). The broker refuses for good a batch over a topic's
    ``max.message.bytes``, and the worker then stops (``streams.delivery``): a topic an
    operator limited below FRAUDSTREAM_PRODUCER_BATCH_BYTES must lower the batches, not
    stop the worker. A topic whose limit cannot be read is left out (the broker's
    default, 1 MiB, is above the setting's maximum).
    """
    wanted = settings.producer_batch_bytes
    names = [topic.name for topic in product_topics(settings)]
    admin = AIOKafkaAdminClient(request_timeout_ms=15_000, **client_options(settings))
    try:
        await admin.start()
        described = await describe_topic_configs(admin, names, ["max.message.bytes"])
    except (KafkaError, OSError) as exc:
        logger.warning(
            "could not read the topics' max.message.bytes (%s): record batches of up to %d "
            "bytes (FRAUDSTREAM_PRODUCER_BATCH_BYTES)",
            exc,
            wanted,
        )
        return wanted
    finally:
        await admin.close()
    limits = {
        topic.name: int(topic.configs["max.message.bytes"])
        for topic in described
        if not topic.error_code and topic.configs.get("max.message.bytes", "").isdigit()
    }
    if not limits:
        return wanted
    name, limit = min(limits.items(), key=lambda item: item[1])
    if limit - BATCH_HEADROOM >= wanted:
        return wanted
    batch = max(1024, limit - BATCH_HEADROOM)
    logger.warning(
        "topic %s takes record batches of at most %d bytes (max.message.bytes): the "
        "producer's batches are limited to %d bytes instead of %d "
        "(FRAUDSTREAM_PRODUCER_BATCH_BYTES)",
        name,
        limit,
        batch,
        wanted,
    )
    return batch


async def broker_answers(settings: Settings, timeout_s: float = 5.0) -> bool:
    """Return whether a broker answers a metadata request within the timeout."""
    admin = AIOKafkaAdminClient(
        request_timeout_ms=int(timeout_s * 1000), **client_options(settings)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return True
