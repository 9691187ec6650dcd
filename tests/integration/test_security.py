"""Kafka SASL/SCRAM over TLS and Redis AUTH over TLS, configured from the settings alone.

A broker whose only client listener is SASL_SSL (SCRAM-SHA-512) and a redis-server that
speaks TLS only, with a password, both with certificates of a CA made for this module
(see ``secured.py``). Everything below connects through the project's own code paths,
configured by a ``Settings`` object: the admin helper, ``fraudstream replay``, the alert
feed behind ``fraudstream alerts``, the Faust app of ``create_app``, ``redisclient`` and
the Redis table store. Wrong credentials must fail within seconds with one clear line,
and the passwords must never show in logs, command output or ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import secrets
import ssl
import time
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import polars as pl
import pytest
import redis
from faust.auth import SASLCredentials
from faust.types.auth import AuthProtocol, SASLMechanism
from secured import SCRAM, SecuredKafka, SecuredRedis, Tls, make_tls
from typer.testing import CliRunner

from features.simulator import SimulationConfig, simulate, write_dataset
from streams.alertfeed import AlertFeed, CaughtUp, FeedMessage, StartAt
from streams.app import create_app
from streams.cli import cli
from streams.contracts import ALERT, decode_transaction
from streams.kafka import (
    BrokerAuthenticationError,
    BrokerUnavailableError,
    broker_answers,
    ensure_topics,
    product_topics,
)
from streams.records import Alert, AlertReason, Transaction, alert_id
from streams.redisclient import connect, connect_tables
from streams.settings import Settings
from streams.tablestore import RedisStore

pytestmark = pytest.mark.timeout(180)

runner = CliRunner()

#: Longest a refused client may take to say so: aiokafka and redis-py fail at the first
#: answer of the server, so this is slack for a loaded machine, not an expected time.
FAIL_FAST_S = 15.0


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, Path]:
    """A small simulated dataset for ``fraudstream replay``, and its parquet file."""
    frame = simulate(SimulationConfig(customers=20, terminals=40, days=5, seed=3))
    path = tmp_path_factory.mktemp("dataset") / "tx.parquet"
    write_dataset(frame, path)
    return frame, path


@pytest.fixture(scope="module")
def secured_base(
    local_infra: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    tls: Tls,
    free_port: Callable[[], int],
) -> Iterator[Settings]:
    """Start the secured broker and redis-server; yield the settings of their clients.

    ``local_infra`` is there for the jars: the local broker's start resolves them, and
    the secured broker runs the same ones. Both processes are stopped on the way out,
    whatever happened (a failed start stops its own process already).
    """
    home = tmp_path_factory.mktemp("secured")
    kafka_port, controller_port, internal_port, redis_port = (free_port() for _ in range(4))
    client = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=SCRAM,
        kafka_sasl_username="fraudstream",
        kafka_sasl_password=f"kafka-{secrets.token_urlsafe(16)}",
        kafka_ssl_cafile=tls.ca_file,
        redis_url=f"rediss://127.0.0.1:{redis_port}/0",
        redis_password=f"redis-{secrets.token_urlsafe(16)}",
        redis_ssl_cafile=tls.ca_file,
        table_store="",  # follows redis_url, as by default
        local_dir=home / "local",
        topic_partitions=3,
    )
    kafka = SecuredKafka(
        local_infra,
        client=client,
        home=home / "kafka",
        controller_port=controller_port,
        internal_port=internal_port,
        tls=tls,
    )
    if not (kafka.lib_dir / ".complete").exists():  # else its start would run mvn
        pytest.fail(f"no Kafka jars in {kafka.lib_dir}: run `fraudstream infra up` first")
    redis_server = SecuredRedis(client, home=home / "redis", tls=tls)
    try:
        with _aiokafka_tls_closes(client):  # its readiness checks are short-lived clients
            redis_server.start()
            kafka.start()
        yield client
    finally:
        kafka.stop()
        redis_server.stop()


@pytest.fixture
def secured(secured_base: Settings, run_id: str) -> Settings:
    """The secured settings, with this test's own topics, keys and consumer group."""
    return secured_base.model_copy(
        update={
            "app_id": f"fraudstream-sec-{run_id}",
            "topic_prefix": f"sec-{run_id}-",
            "redis_key_prefix": f"sec:{run_id}",
        }
    )


@contextlib.contextmanager
def _aiokafka_tls_closes(settings: Settings) -> Iterator[None]:
    """Tolerate aiokafka's TLS connections still closing when their event loop ends.

    aiokafka closes some connections without waiting for them to finish closing: the
    bootstrap connection once it has the metadata, and one whose SASL authentication
    failed. Over TLS closing takes a round trip (close_notify), so when ``asyncio.run``
    returns soon after (a short-lived client, a failed bootstrap) the socket is now and
    then still open when collected: a ResourceWarning, an error under this project's
    ``filterwarnings``, raised in whichever later test the collector happens to run (or
    at the end of the session). Only those are ignored (asyncio's socket transports and
    their loopback sockets, to the secured broker or already disconnected; redis-py's
    TLS sockets stay errors), and they are collected before leaving, so that they
    cannot surface anywhere else.
    """
    port = settings.kafka_bootstrap_servers.rpartition(":")[2]
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"unclosed transport <_SelectorSocketTransport", ResourceWarning
        )
        warnings.filterwarnings(
            "ignore",
            # A socket the broker already closed has no raddr any more.
            rf"unclosed <socket\.socket [^>]*laddr=\('127\.0\.0\.1', \d+\)"
            rf"(, raddr=\('127\.0\.0\.1', {port}\))?>\Z",
            ResourceWarning,
        )
        try:
            yield
        finally:
            gc.collect()


@pytest.fixture(autouse=True)
def _collect_aiokafka_tls_closes(secured_base: Settings) -> Iterator[None]:
    """Every test of this module runs inside ``_aiokafka_tls_closes``."""
    with _aiokafka_tls_closes(secured_base):
        yield


def _passwords(settings: Settings) -> list[str]:
    return [
        secret.get_secret_value()
        for secret in (settings.kafka_sasl_password, settings.redis_password)
        if secret is not None
    ]


def _with(settings: Settings, **update: Any) -> Settings:
    """A variation of the settings, validated like settings read from the environment."""
    return Settings(**{**settings.model_dump(), **update})


def _cli(settings: Settings, *args: str) -> tuple[int, str, str, float]:
    """Run ``fraudstream ARGS`` with the settings in its environment, as a deployment does."""
    started = time.monotonic()
    result = runner.invoke(cli, list(args), env=settings.as_env())
    return result.exit_code, result.stdout, result.stderr, time.monotonic() - started


async def _feed(settings: Settings, topic: str) -> list[FeedMessage]:
    """Every message of a topic, read by the alert feed (``fraudstream alerts``'s reader)."""
    messages: list[FeedMessage] = []
    async with AlertFeed(settings, StartAt.beginning(), follow=False, topic=topic) as feed:
        async for item in feed:
            if isinstance(item, CaughtUp):
                break
            messages.append(item)
    return messages


def _alert(index: int) -> Alert:
    return Alert(
        alert_id=alert_id(f"sec-tx-{index}", "v1"),
        tx_id=f"sec-tx-{index}",
        customer_id=f"customer-{index}",
        terminal_id="terminal-1",
        amount=Decimal("12.30"),
        currency="EUR",
        tx_time=int(time.time() * 1000) - 60_000,
        score=0.9,
        threshold=0.5,
        model_version="v1",
        reasons=[AlertReason(feature="amount_ratio_1d", value=4.5, contribution=0.3)],
        features={"amount_ratio_1d": 4.5},
        emitted_at=int(time.time() * 1000),
        latency_ms=5,
    )


# --- Kafka ------------------------------------------------------------------------------


def test_topics_replay_and_alert_feed_round_trip_over_sasl_ssl(
    secured: Settings, dataset: tuple[pl.DataFrame, Path]
) -> None:
    names = set(secured.topic_names.values())
    assert set(asyncio.run(ensure_topics(secured, product_topics(secured)))) == names
    assert asyncio.run(ensure_topics(secured, product_topics(secured))) == []

    frame, path = dataset
    code, stdout, stderr, _ = _cli(secured, "--log-level", "error", "replay", str(path))
    assert code == 0, stderr
    assert f"{frame.height} transactions" in stdout, stdout

    messages = asyncio.run(_feed(secured, secured.topic_names["transactions"]))
    received = [decode_transaction(m.value) for m in messages]
    assert all(isinstance(t, Transaction) for t in received), received
    assert sorted(t.tx_id for t in received if isinstance(t, Transaction)) == sorted(
        frame["tx_id"].to_list()
    )


def test_create_app_credentials_reach_aiokafka_and_its_producer_connects(
    secured: Settings,
) -> None:
    app = create_app(secured, web_enabled=False)
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_512
    assert credentials.username == secured.kafka_sasl_username
    context = credentials.ssl_context
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    alerts = [_alert(i) for i in range(3)]
    topic = secured.topic_names["alerts"]

    async def produce() -> dict[str, Any]:
        producer = app.producer
        await producer.start()
        try:
            # Declared as a worker declares its topics: by Faust, over its producer.
            await app.topic(topic, partitions=3).maybe_declare()
            client = cast(Any, producer)._producer.client  # the AIOKafkaProducer's client
            seen = {
                "protocol": client._security_protocol,
                "mechanism": client._sasl_mechanism,
                "username": client._sasl_plain_username,
                "ssl_context": client._ssl_context,
            }
            for alert in alerts:
                await producer.send_and_wait(
                    topic, alert.customer_id.encode(), ALERT.encode(alert), None, None, None
                )
        finally:
            await producer.stop()
        return seen

    seen = asyncio.run(produce())
    assert seen == {
        "protocol": "SASL_SSL",
        "mechanism": SCRAM,
        "username": secured.kafka_sasl_username,
        "ssl_context": context,
    }
    code, stdout, stderr, _ = _cli(secured, "alerts", "--from-beginning", "--output", "json")
    assert code == 0, stderr
    printed = sorted(json.loads(line)["alert_id"] for line in stdout.splitlines())
    assert printed == sorted(alert.alert_id for alert in alerts)


@pytest.mark.parametrize("command", ["replay", "alerts"])
def test_a_wrong_kafka_password_fails_at_once_in_one_line(
    secured: Settings, dataset: tuple[pl.DataFrame, Path], command: str
) -> None:
    wrong = _with(secured, kafka_sasl_password="not-the-password")
    args = ["replay", str(dataset[1])] if command == "replay" else ["alerts"]
    code, stdout, stderr, elapsed = _cli(wrong, *args)
    assert code == 1, (stdout, stderr)
    assert elapsed < FAIL_FAST_S
    assert "Traceback" not in stdout + stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"fraudstream {command}: "), stderr
    assert secured.kafka_bootstrap_servers in stderr
    assert "refused the credentials of 'fraudstream'" in stderr, stderr
    assert "Authentication failed" in stderr, stderr


def test_ensure_topics_with_a_wrong_password_raises_a_clear_error(secured: Settings) -> None:
    wrong = _with(secured, kafka_sasl_password="not-the-password")
    started = time.monotonic()
    with pytest.raises(BrokerAuthenticationError, match="SaslAuthenticationFailed"):
        asyncio.run(ensure_topics(wrong, product_topics(wrong)))
    assert time.monotonic() - started < FAIL_FAST_S


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        pytest.param({"kafka_security_protocol": "PLAINTEXT"}, "closed", id="plaintext"),
        pytest.param({"kafka_security_protocol": "SSL"}, "closed", id="tls-without-sasl"),
        pytest.param(
            {"kafka_ssl_cafile": None}, "CERTIFICATE_VERIFY_FAILED", id="sasl-ssl-without-the-ca"
        ),
    ],
)
def test_clients_without_sasl_or_the_ca_are_refused(
    secured: Settings, update: dict[str, Any], reason: str
) -> None:
    other = _with(secured, **update)
    started = time.monotonic()
    assert not asyncio.run(broker_answers(other, timeout_s=5.0))
    with pytest.raises(BrokerUnavailableError, match=reason) as raised:
        asyncio.run(ensure_topics(other, product_topics(other)))
    assert type(raised.value) is BrokerUnavailableError
    assert time.monotonic() - started < 2 * FAIL_FAST_S


# --- Redis ------------------------------------------------------------------------------


def test_redisclient_connects_over_tls_with_the_password(secured: Settings) -> None:
    key = f"{secured.redis_key_prefix}:greeting"
    client = connect(secured)
    tables = connect_tables(secured)
    try:
        assert client.ping()
        assert client.set(key, b"hello")
        assert client.get(key) == b"hello"
        assert tables.get(key) == b"hello"  # the table store's Redis: the same server
        client.delete(key)
    finally:
        client.close()
        tables.close()


@pytest.mark.parametrize(
    ("update", "error", "message"),
    [
        pytest.param(
            {"redis_password": "not-the-password"},
            redis.AuthenticationError,
            "invalid username-password pair",
            id="wrong-password",
        ),
        pytest.param(
            {"redis_ssl_cafile": None},
            redis.ConnectionError,
            "certificate verify failed",
            id="without-the-ca",
        ),
        pytest.param(
            {"redis_url": "redis://127.0.0.1:{port}/0"},
            redis.ConnectionError,
            None,  # the server drops the connection: no more to say
            id="plaintext",
        ),
    ],
)
def test_redisclient_refused_clearly(
    secured: Settings, update: dict[str, Any], error: type[Exception], message: str | None
) -> None:
    port = urlsplit(secured.redis_url).port
    update = {k: v.format(port=port) if isinstance(v, str) else v for k, v in update.items()}
    client = connect(_with(secured, **update))
    started = time.monotonic()
    try:
        with pytest.raises(error, match=message and f"(?i){message}"):
            client.ping()
    finally:
        client.close()
    assert time.monotonic() - started < FAIL_FAST_S


def test_table_store_connects_with_the_settings_password_and_ca(
    secured: Settings, make_store: Callable[..., RedisStore], tls: Tls
) -> None:
    store = make_store(secured, "sec-table", 3, secured.table_store)
    assert secured.table_store == secured.redis_url
    assert store.config.tls
    assert store.config.tls_ca_file == str(tls.ca_file)
    assert store.backend.ping()
    assert store.backend.claim([b"sec:p0"], "owner-1") == [None]
    assert store.backend.read_offsets(b"sec:p0") == {b"owner_generation": b"owner-1"}
    client = connect(secured)
    try:
        client.delete(*client.keys("*sec:p0*"))
    finally:
        client.close()


def test_table_store_with_a_wrong_password_fails_instead_of_retrying(
    secured: Settings, make_store: Callable[..., RedisStore]
) -> None:
    wrong = _with(secured, redis_password="not-the-password")
    store = make_store(wrong, "sec-table", 3, wrong.table_store)
    started = time.monotonic()
    with pytest.raises(redis.AuthenticationError):
        store.backend.ping()
    assert time.monotonic() - started < FAIL_FAST_S


# --- secrets ----------------------------------------------------------------------------


def test_passwords_never_appear_in_logs_output_or_repr(
    secured: Settings,
    make_store: Callable[..., RedisStore],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[str] = [repr(secured), str(secured), json.dumps(secured.public_view())]

    code, stdout, stderr, _ = _cli(secured, "settings")
    assert code == 0, stderr
    assert "FRAUDSTREAM_KAFKA_SASL_PASSWORD=**********" in stdout.splitlines()
    assert "FRAUDSTREAM_REDIS_PASSWORD=**********" in stdout.splitlines()
    shown += [stdout, stderr]

    # Connections, good and refused, with every library logging at DEBUG; PLAIN too,
    # whose SASL token is the password itself.
    assert asyncio.run(broker_answers(secured))
    assert asyncio.run(broker_answers(_with(secured, kafka_sasl_mechanism="PLAIN")))
    assert "SaslAuthenticateRequest_v1(<redacted>)" in caplog.text
    assert not asyncio.run(broker_answers(_with(secured, kafka_sasl_password="wrong")))
    code, stdout, stderr, _ = _cli(secured, "--log-level", "debug", "alerts")
    shown += [stdout, stderr]
    app = create_app(secured, web_enabled=False)
    shown += [repr(app.conf.broker_credentials)]

    async def start_stop_producer() -> None:
        await app.producer.start()
        await app.producer.stop()

    asyncio.run(start_stop_producer())
    client = connect(secured)
    try:
        assert client.ping()
        shown += [repr(client), repr(client.connection_pool)]
    finally:
        client.close()
    store = make_store(secured, "sec-secrets", 3, secured.table_store)
    assert store.backend.ping()
    shown += [repr(store.config), store.config.description, repr(store)]

    captured = capsys.readouterr()
    shown += [caplog.text, captured.out, captured.err]
    everything = "\n".join(shown)
    assert "rediss://127.0.0.1" in everything  # what was captured is not empty
    for password in _passwords(secured):
        assert password not in everything
