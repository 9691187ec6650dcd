"""How a Redis-backed table is configured: the store URL plus the table's options.

``redis://[:password@]host[:port][/db]?option=value&...`` (``rediss://`` for TLS; add
``cluster=true`` for a Redis Cluster, reached through any of its nodes). Table
options (``app.Table(..., options={...})``) override URL options, which override the
app's settings (``app_store_defaults``), which override the environment
(FRAUDSTREAM_REDIS_PASSWORD, FRAUDSTREAM_REDIS_SSL_CAFILE, FRAUDSTREAM_REDIS_KEY_PREFIX),
which override the defaults below. Pure: parsing only, no connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from streams.settings import Settings, env_var

#: Entities quiet for longer than this vanish from Redis (the longest feature window,
#: 30 days plus the 7-day terminal delay, plus margin). 0 keeps entries forever.
DEFAULT_TTL_S = 40 * 24 * 3600
DEFAULT_CACHE_ENTRIES = 200_000
DEFAULT_NAMESPACE = "fraudstream"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class StoreConfigError(ValueError):
    """The store URL or table options are invalid; the message names the culprit."""


@dataclass(frozen=True)
class StoreConfig:
    """Everything a RedisStore needs to know besides its table."""

    host: str
    port: int
    db: int
    tls: bool
    #: Kept out of ``repr``: a config in a log line or a traceback must not show it.
    password: str | None = field(repr=False)
    namespace: str
    ttl_s: int
    changelog: bool
    cache_entries: int
    flush_interval_s: float | None
    socket_timeout_s: float
    tls_ca_file: str | None
    cluster: bool = False

    @property
    def description(self) -> str:
        """Where the store points, without the password: safe to log."""
        scheme = "rediss" if self.tls else "redis"
        cluster = "?cluster=true" if self.cluster else ""
        return f"{scheme}://{self.host}:{self.port}/{self.db}{cluster}"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis``, or ``RedisCluster`` (which takes no db)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "password": self.password,
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
            "ssl": self.tls,
        }
        if not self.cluster:
            kwargs["db"] = self.db
        if self.tls and self.tls_ca_file:
            kwargs["ssl_ca_certs"] = self.tls_ca_file
        return kwargs


def parse_store_config(
    url: str | URL,
    options: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    app_defaults: Mapping[str, Any] | None = None,
) -> StoreConfig:
    """Combine the store URL, the table options, the app's settings and the environment.

    Precedence: table options, URL query, ``app_defaults`` (``namespace``, ``password``
    and ``tls_ca_file`` from the fraudstream settings of the app: see
    ``app_store_defaults``), environment, defaults.

    Raises:
        StoreConfigError: an unknown option, a bad value, an unsupported scheme, or a
            db other than 0 on a cluster (a Redis Cluster has only db 0).
    """
    parsed = URL(str(url))
    if parsed.scheme not in ("redis", "rediss"):
        raise StoreConfigError(f"not a Redis store URL: {parsed.scheme}://")
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = dict(parsed.query)
    merged.update(options or {})
    known = {
        "ttl",
        "changelog",
        "cache_entries",
        "flush_interval",
        "namespace",
        "password",
        "socket_timeout",
        "tls_ca_file",
        "cluster",
    }
    unknown = sorted(set(merged) - known)
    if unknown:
        raise StoreConfigError(
            f"unknown Redis store option(s): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    db_path = parsed.path.strip("/")
    try:
        db = int(db_path) if db_path else 0
    except ValueError:
        raise StoreConfigError(f"Redis db must be a number, got {db_path!r}") from None
    cluster = _boolean("cluster", merged.get("cluster", False))
    if cluster and db != 0:
        raise StoreConfigError(f"a Redis Cluster has only db 0, got db {db} with cluster=true")
    app_defaults = app_defaults or {}
    password = (
        merged.get("password")
        or parsed.password
        or app_defaults.get("password")
        or environ.get(env_var("redis_password"))
    )
    namespace = str(
        merged.get("namespace")
        or app_defaults.get("namespace")
        or environ.get(env_var("redis_key_prefix"))
        or DEFAULT_NAMESPACE
    )
    flush_interval = merged.get("flush_interval")
    return StoreConfig(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 6379,
        db=db,
        tls=parsed.scheme == "rediss",
        password=str(password) if password else None,
        namespace=namespace,
        ttl_s=_non_negative_int("ttl", merged.get("ttl", DEFAULT_TTL_S)),
        changelog=_boolean("changelog", merged.get("changelog", False)),
        cache_entries=_non_negative_int(
            "cache_entries", merged.get("cache_entries", DEFAULT_CACHE_ENTRIES)
        ),
        flush_interval_s=None
        if flush_interval is None
        else _positive_float("flush_interval", flush_interval),
        socket_timeout_s=_positive_float("socket_timeout", merged.get("socket_timeout", 5.0)),
        tls_ca_file=merged.get("tls_ca_file")
        or app_defaults.get("tls_ca_file")
        or environ.get(env_var("redis_ssl_cafile")),
        cluster=cluster,
    )


def app_store_defaults(settings: Settings) -> dict[str, Any]:
    """The store defaults taken from the fraudstream settings (``app_defaults`` above).

    The password and the CA of a private-CA ``rediss://`` server reach every store this
    way rather than through its URL: Faust logs store URLs, and a table would otherwise
    need both repeated in its own URL to connect to the Redis ``redis_url`` points at.
    """
    password = settings.redis_password
    cafile = settings.redis_ssl_cafile
    return {
        "namespace": settings.redis_key_prefix,
        "password": password.get_secret_value() if password else None,
        "tls_ca_file": str(cafile) if cafile else None,
    }


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise StoreConfigError(f"Redis store option {name} must be true or false, got {value!r}")


def _non_negative_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise StoreConfigError(
            f"Redis store option {name} must be an integer, got {value!r}"
        ) from None
    if number < 0:
        raise StoreConfigError(f"Redis store option {name} must be >= 0, got {number}")
    return number


def _positive_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StoreConfigError(
            f"Redis store option {name} must be a number, got {value!r}"
        ) from None
    if number <= 0:
        raise StoreConfigError(f"Redis store option {name} must be > 0, got {number}")
    return number
