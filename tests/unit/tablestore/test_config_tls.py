"""The table store's TLS CA and password: from the settings, never in a repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import ENV_PREFIX, Settings
from streams.tablestore.config import app_store_defaults, parse_store_config


@pytest.fixture(autouse=True)
def no_fraudstream_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read defaults: variables of the developer's shell must not leak in."""
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_app_store_defaults_carry_password_ca_and_namespace() -> None:
    settings = Settings(
        redis_url="rediss://r:6380/0",
        redis_password="pw",
        redis_ssl_cafile=Path("/ca.pem"),
        redis_key_prefix="ns",
    )
    assert app_store_defaults(settings) == {
        "namespace": "ns",
        "password": "pw",
        "tls_ca_file": "/ca.pem",
    }
    assert app_store_defaults(Settings()) == {
        "namespace": "fraudstream",
        "password": None,
        "tls_ca_file": None,
    }


def test_the_ca_from_options_url_app_settings_or_environment() -> None:
    env = {"FRAUDSTREAM_REDIS_SSL_CAFILE": "/env.pem"}
    app = {"tls_ca_file": "/app.pem"}
    url = "rediss://r:6380/0"
    assert parse_store_config(url, environ=env).tls_ca_file == "/env.pem"
    assert parse_store_config(url, app_defaults=app, environ=env).tls_ca_file == "/app.pem"
    from_url = parse_store_config(f"{url}?tls_ca_file=/url.pem", app_defaults=app, environ=env)
    assert from_url.tls_ca_file == "/url.pem"
    from_options = parse_store_config(
        f"{url}?tls_ca_file=/url.pem", {"tls_ca_file": "/opt.pem"}, app_defaults=app
    )
    assert from_options.tls_ca_file == "/opt.pem"
    assert parse_store_config(url, environ={}).tls_ca_file is None


def test_the_ca_reaches_redis_py_over_tls_only() -> None:
    app = {"tls_ca_file": "/ca.pem"}
    tls = parse_store_config("rediss://r:6380/0", app_defaults=app, environ={})
    assert tls.client_kwargs()["ssl_ca_certs"] == "/ca.pem"
    plain = parse_store_config("redis://r:6379/0", app_defaults=app, environ={})
    assert "ssl_ca_certs" not in plain.client_kwargs()


def test_the_password_is_kept_out_of_the_config_repr() -> None:
    config = parse_store_config("rediss://r:6380/0", app_defaults={"password": "pw-secret"})
    assert config.password == "pw-secret"
    assert "pw-secret" not in repr(config)
    assert "pw-secret" not in str(config)
