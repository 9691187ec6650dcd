"""Which Redis errors the table store retries: outages yes, bad credentials or CA no."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest
import redis
from redis.exceptions import RedisClusterException

from streams.tablestore.backend import RedisBackend, is_misconfigured, is_retryable


def _raised_while_handling(error: Exception, context: BaseException) -> Exception:
    """``error`` as redis-py raises it: inside the ``except`` of ``context``."""
    error.__context__ = context
    return error


def test_an_outage_is_retried() -> None:
    assert is_retryable(redis.ConnectionError("Connection refused"))
    assert is_retryable(redis.TimeoutError("timed out"))
    cluster = RedisClusterException("no node answers")
    cluster.__cause__ = redis.ConnectionError("refused")
    assert is_retryable(cluster)


def test_a_refused_password_is_not_retried() -> None:
    refused = redis.AuthenticationError("invalid username-password pair")
    assert isinstance(refused, redis.ConnectionError)  # why it needs saying
    assert is_misconfigured(refused)
    assert not is_retryable(refused)
    cluster = RedisClusterException("no node answers")
    cluster.__cause__ = refused
    assert not is_retryable(cluster)


def test_an_untrusted_certificate_is_not_retried() -> None:
    untrusted = _raised_while_handling(
        redis.ConnectionError("Error 1 connecting: certificate verify failed"),
        ssl.SSLCertVerificationError("certificate verify failed"),
    )
    assert is_misconfigured(untrusted)
    assert not is_retryable(untrusted)
    reset = _raised_while_handling(
        redis.ConnectionError("Error 104 connecting"), ConnectionResetError("reset")
    )
    assert is_retryable(reset)


def test_a_refused_password_is_said_once_in_one_clear_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse() -> None:
        raise redis.AuthenticationError("invalid username-password pair")

    backend = RedisBackend(lambda: redis.Redis(), ttl_ms=0, description="127.0.0.1:6399/0")
    with caplog.at_level(logging.ERROR, logger="streams.tablestore.backend"):
        for _ in range(3):
            with pytest.raises(redis.AuthenticationError):
                backend.retrying(refuse)
        with pytest.raises(redis.AuthenticationError):
            asyncio.run(backend.retrying_async(refuse))
    assert [r.getMessage() for r in caplog.records] == [
        "Redis at 127.0.0.1:6399/0 refused this worker: AuthenticationError: invalid "
        "username-password pair. Not retried: the worker stops, and resumes from its last "
        "flush once restarted with what Redis accepts (FRAUDSTREAM_REDIS_PASSWORD, "
        "FRAUDSTREAM_REDIS_SSL_CAFILE)"
    ]


def test_other_errors_that_are_not_retried_say_nothing_here(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def wrong_type() -> None:
        raise redis.ResponseError("WRONGTYPE Operation against a key")

    backend = RedisBackend(lambda: redis.Redis(), ttl_ms=0, description="127.0.0.1:6399/0")
    with caplog.at_level(logging.ERROR), pytest.raises(redis.ResponseError):
        backend.retrying(wrong_type)
    assert caplog.records == []
