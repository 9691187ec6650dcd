"""Store URL and table options: parsed, validated, secrets kept out of descriptions."""

from __future__ import annotations

import pytest

from streams.tablestore.config import DEFAULT_TTL_S, StoreConfigError, parse_store_config


def test_defaults() -> None:
    config = parse_store_config("redis://", environ={})
    assert (config.host, config.port, config.db, config.tls) == ("127.0.0.1", 6379, 0, False)
    assert config.ttl_s == DEFAULT_TTL_S
    assert config.changelog is False
    assert config.namespace == "fraudstream"
    assert config.password is None


def test_url_options_then_table_options_win() -> None:
    config = parse_store_config(
        "rediss://cache.internal:6380/2?ttl=60&changelog=true&cache_entries=10",
        {"ttl": 120, "namespace": "staging"},
        environ={},
    )
    assert (config.host, config.port, config.db, config.tls) == ("cache.internal", 6380, 2, True)
    assert config.ttl_s == 120
    assert config.changelog is True
    assert config.cache_entries == 10
    assert config.namespace == "staging"
    assert config.client_kwargs()["ssl"] is True


def test_password_from_options_url_or_environment_never_in_description() -> None:
    env = {"FRAUDSTREAM_REDIS_PASSWORD": "from-env", "FRAUDSTREAM_REDIS_KEY_PREFIX": "ns"}
    assert parse_store_config("redis://h", environ=env).password == "from-env"
    assert parse_store_config("redis://:from-url@h", environ=env).password == "from-url"
    config = parse_store_config("redis://:from-url@h", {"password": "opt"}, environ=env)
    assert config.password == "opt"
    assert config.namespace == "ns"
    assert "opt" not in config.description
    assert config.description == "redis://h:6379/0"


@pytest.mark.parametrize(
    ("url", "options", "expected"),
    [
        ("redis://h:7000/0", {}, False),
        ("redis://h:7000/0?cluster=true", {}, True),
        ("redis://h:7000?cluster=yes", {}, True),
        ("redis://h:7000/0?cluster=true", {"cluster": "false"}, False),
        ("rediss://h:7000/0", {"cluster": True}, True),
    ],
)
def test_the_cluster_option(url: str, options: dict[str, object], expected: bool) -> None:
    config = parse_store_config(url, options, environ={})
    assert config.cluster is expected
    assert ("db" in config.client_kwargs()) is not expected  # RedisCluster takes no db
    assert config.description.endswith("?cluster=true") is expected


def test_a_cluster_has_only_db_0() -> None:
    with pytest.raises(StoreConfigError, match="only db 0"):
        parse_store_config("redis://h:7000/1?cluster=true", environ={})
    with pytest.raises(StoreConfigError, match="only db 0"):
        parse_store_config("redis://h:7000/3", {"cluster": "on"}, environ={})
    assert parse_store_config("redis://h:7000/3", environ={}).db == 3  # without cluster: fine


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("memory://", {}, "not a Redis store URL"),
        ("redis://h/x", {}, "db must be a number"),
        ("redis://h?tll=5", {}, "unknown Redis store option"),
        ("redis://h", {"ttl": -1}, "ttl must be >= 0"),
        ("redis://h", {"changelog": "maybe"}, "changelog must be true or false"),
        ("redis://h", {"flush_interval": 0}, "flush_interval must be > 0"),
        ("redis://h?cluster=maybe", {}, "cluster must be true or false"),
        ("redis://h", {"cluster": 2}, "cluster must be true or false"),
    ],
)
def test_bad_configuration_is_refused_clearly(
    url: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(StoreConfigError, match=message):
        parse_store_config(url, options, environ={})
