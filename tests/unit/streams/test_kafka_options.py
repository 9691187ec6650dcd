"""Kafka client options and Faust credentials follow the security settings."""

from __future__ import annotations

import ssl

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import ValidationError

from streams.app import broker_credentials, create_app
from streams.kafka import (
    SENT_AT_HEADER,
    client_options,
    plausible_sent_at_ms,
    product_topics,
    sent_at_ms,
)
from streams.settings import ENV_PREFIX, Settings


@pytest.fixture(autouse=True)
def no_fraudstream_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read defaults: variables of the developer's shell must not leak in."""
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_plaintext_has_no_tls_and_no_sasl() -> None:
    options = client_options(Settings(kafka_bootstrap_servers="a:1,b:2"))
    assert options == {"bootstrap_servers": ["a:1", "b:2"], "security_protocol": "PLAINTEXT"}
    assert broker_credentials(Settings()) is None


def test_sasl_ssl_reaches_aiokafka_and_faust() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "svc"
    assert options["sasl_plain_password"] == "pw"
    assert isinstance(options["ssl_context"], ssl.SSLContext)

    credentials = broker_credentials(settings)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-256"


def test_ssl_only_gives_faust_ssl_credentials() -> None:
    credentials = broker_credentials(Settings(kafka_security_protocol="SSL"))
    assert isinstance(credentials, SSLCredentials)


def test_product_topics_use_the_configured_partitions_and_prefix() -> None:
    settings = Settings(topic_partitions=4, topic_prefix="p-")
    specs = {t.name: t.partitions for t in product_topics(settings)}
    assert specs == {
        "p-transactions": 4,
        "p-fraud-reports": 4,
        "p-alerts": 4,
        "p-scores": 4,
        "p-transactions-dlq": 4,
        "p-model-control": 1,
        "p-transactions-by-terminal": 4,
    }


def test_the_app_serves_on_loopback_with_the_configured_partitions(tmp_path: object) -> None:
    settings = Settings(web_port=7070, topic_partitions=5, app_id="fraudstream-unit")
    app = create_app(settings)
    assert app.conf.web_bind == "127.0.0.1"
    assert app.conf.web_host == "127.0.0.1"
    assert app.conf.web_port == 7070
    assert app.conf.topic_partitions == 5
    assert app.conf.id == "fraudstream-unit"
    assert [str(url) for url in app.conf.broker] == ["kafka://127.0.0.1:9092"]
    assert app.conf.broker_session_timeout == 30.0


def test_the_producer_sends_record_batches_of_the_configured_size() -> None:
    """Faust's 16 KB batches made the scorer wait on the broker every ~20 score records."""
    assert Settings().producer_batch_bytes == 524_288
    app = create_app(Settings(producer_batch_bytes=200_000, app_id="fraudstream-unit"))
    assert app.conf.producer_max_batch_size == 200_000
    assert app.producer.max_batch_size == 200_000  # what Faust hands aiokafka
    with pytest.raises(ValidationError):
        Settings(producer_batch_bytes=2_000_000)  # over Faust's 1 MB request limit


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"1718031234567", 1718031234567),
        (None, None),
        (b"", None),
        (b"-5", None),
        (b"12a", None),
        ("١٢".encode(), None),
        (b"9" * 5000, None),
        (b"9" * 14, None),
    ],
)
def test_the_sent_at_header_is_read_only_when_it_is_a_number(
    value: bytes | None, expected: int | None
) -> None:
    assert sent_at_ms([("other", b"1"), (SENT_AT_HEADER, value)]) == expected  # type: ignore[list-item]


def test_only_a_plausible_send_time_is_used() -> None:
    now = 1_800_000_000_000
    week = 7 * 86_400_000
    assert plausible_sent_at_ms(now - 5, now, week) == now - 5
    assert plausible_sent_at_ms(now + 1_000, now, week) == now + 1_000  # clocks differ a bit
    assert plausible_sent_at_ms(now + 3_600_000, now, week) is None
    assert plausible_sent_at_ms(0, now, week) is None
    assert plausible_sent_at_ms(now - week - 1, now, week) is None
    assert plausible_sent_at_ms(None, now, week) is None
