"""``redisclient.connect``: the password and the CA of the settings reach redis-py."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.connection import Connection, SSLConnection

from streams.redisclient import connect, connect_tables
from streams.settings import ENV_PREFIX, Settings


@pytest.fixture(autouse=True)
def no_fraudstream_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read defaults: variables of the developer's shell must not leak in."""
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_rediss_gets_the_password_and_the_ca() -> None:
    settings = Settings(
        redis_url="rediss://r:6380/0", redis_password="pw", redis_ssl_cafile=Path("/ca.pem")
    )
    client = connect(settings)  # redis-py connects on the first command only
    pool = client.connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    assert "pw" not in repr(client)
    tables = connect_tables(settings)  # the table store follows redis_url by default
    assert isinstance(tables, redis.Redis)
    assert tables.connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    assert tables.connection_pool.connection_kwargs["password"] == "pw"


def test_plain_redis_ignores_the_ca() -> None:
    settings = Settings(redis_url="redis://r:6379/0", redis_ssl_cafile=Path("/ca.pem"))
    pool = connect(settings).connection_pool
    assert pool.connection_class is Connection
    assert "ssl_ca_certs" not in pool.connection_kwargs
