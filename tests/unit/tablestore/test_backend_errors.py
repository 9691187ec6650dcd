"""Which Redis errors the table store retries: outages yes, bad credentials or CA no."""

from __future__ import annotations

import ssl

import redis
from redis.exceptions import RedisClusterException

from streams.tablestore.backend import is_misconfigured, is_retryable


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
