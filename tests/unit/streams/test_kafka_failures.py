"""Kafka connection failures say why, in one error; SASL tokens stay out of DEBUG logs."""

from __future__ import annotations

import logging
import socket

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from aiokafka.protocol.admin import SaslAuthenticateRequest_v1

from streams.kafka import (
    BrokerAuthenticationError,
    BrokerUnavailableError,
    bootstrap_failures,
    producer_batch_bytes,
    unavailable_error,
)
from streams.settings import Settings

# Exactly how aiokafka's client logs a bootstrap server it could not use.
UNABLE = 'Unable connect to "%s:%s": %s'

SASL = Settings(
    kafka_bootstrap_servers="k1:9093,k2:9093",
    kafka_security_protocol="SASL_SSL",
    kafka_sasl_mechanism="SCRAM-SHA-512",
    kafka_sasl_username="svc",
    kafka_sasl_password="pw-secret",
)


def test_refused_credentials_get_their_own_error_naming_the_user() -> None:
    refused = SaslAuthenticationFailed("Authentication failed due to invalid credentials")
    error = unavailable_error(
        SASL,
        KafkaConnectionError("Unable to bootstrap"),
        [("k1:9093", OSError("Connect call failed")), ("k2:9093", refused)],
    )
    assert isinstance(error, BrokerAuthenticationError)
    assert isinstance(error, BrokerUnavailableError)  # callers that report those, report it
    assert str(error).startswith("Kafka at k1:9093,k2:9093 refused the credentials of 'svc' (")
    assert "invalid credentials" in str(error)
    assert "pw-secret" not in str(error)


def test_other_failures_list_each_server_and_its_reason() -> None:
    error = unavailable_error(
        SASL,
        KafkaConnectionError("Unable to bootstrap"),
        [("k1:9093", OSError("Connect call failed")), ("k2:9093", TimeoutError("slow"))],
    )
    assert type(error) is BrokerUnavailableError
    assert str(error) == (
        "no Kafka broker answers at k1:9093,k2:9093 (k1:9093: Connect call failed; k2:9093: slow)"
    )


def test_without_logged_reasons_the_exception_is_the_reason() -> None:
    error = unavailable_error(SASL, KafkaConnectionError("Unable to bootstrap"))
    assert str(error) == (
        "no Kafka broker answers at k1:9093,k2:9093 (KafkaConnectionError: Unable to bootstrap)"
    )


def test_bootstrap_failures_are_caught_kept_out_of_the_log_and_only_while_inside(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("aiokafka")
    caplog.set_level(logging.DEBUG)
    refused = SaslAuthenticationFailed("no")
    with bootstrap_failures() as caught:
        log.error(UNABLE, "k1", 9093, refused)
        log.warning('Unable to request metadata from "%s:%s": %s', "k2", 9093, OSError("x"))
        log.debug("Attempting to bootstrap via node at %s:%s", "k1", 9093)
    assert caught.failures[0] == ("k1:9093", refused)
    assert caught.failures[1][0] == "k2:9093"
    assert [r.getMessage() for r in caplog.records] == [
        "Attempting to bootstrap via node at k1:9093"
    ]
    log.error(UNABLE, "k1", 9093, refused)  # outside: logged as aiokafka logs it
    assert len(caught.failures) == 2
    assert caplog.records[-1].levelno == logging.ERROR


def test_sasl_tokens_are_redacted_from_aiokafkas_request_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # The PLAIN token: authorisation id, username and password, NUL-separated.
    request = SaslAuthenticateRequest_v1(sasl_auth_bytes=b"svc\x00svc\x00pw-secret")
    logging.getLogger("aiokafka.conn").debug("Request to %s:%d %d: %s", "k1", 9093, 3, request)
    assert caplog.records[-1].getMessage() == (
        "Request to k1:9093 3: SaslAuthenticateRequest_v1(<redacted>)"
    )
    assert "pw-secret" not in caplog.text


async def test_batch_limits_that_cannot_be_read_keep_the_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker gone between the topic check and this read: the worker starts with the
    setting (a batch a topic then refuses stops it, saying so)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{port}", producer_batch_bytes=300_000)
    with caplog.at_level(logging.WARNING, logger="streams.kafka"):
        assert await producer_batch_bytes(settings) == 300_000
    assert "could not read the topics' max.message.bytes" in caplog.text
