"""Plain Redis clients from the settings, for tools (the demo, benchmarks), not the store.

The table store builds its own client (``streams.tablestore``): retries, timeouts and
fencing are its business. Everything else that talks to Redis uses these.
"""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster

from streams.settings import Settings
from streams.tablestore.config import app_store_defaults, parse_store_config


def connect(settings: Settings) -> redis.Redis:
    """A client for ``settings.redis_url``, with the password and CA from the settings.

    The CA applies to ``rediss://`` only: redis-py's plain connections take no TLS
    options (and refuse them).
    """
    password = settings.redis_password
    tls: dict[str, str] = {}
    if settings.redis_url.startswith("rediss://") and settings.redis_ssl_cafile is not None:
        tls["ssl_ca_certs"] = str(settings.redis_ssl_cafile)
    return redis.Redis.from_url(
        settings.redis_url, password=password.get_secret_value() if password else None, **tls
    )


def connect_tables(settings: Settings) -> redis.Redis | RedisCluster:
    """A client for where the feature tables live: the table store's Redis.

    That is ``settings.redis_url`` by default, but the table store may point elsewhere,
    at a Redis Cluster among others (``?cluster=true``), whose keys are spread over its
    masters: a cleanup must find them there.
    """
    store = settings.table_store
    if not store.startswith(("redis://", "rediss://")):
        return connect(settings)
    config = parse_store_config(store, app_defaults=app_store_defaults(settings))
    if config.cluster:
        return RedisCluster(**config.client_kwargs())
    return redis.Redis(**config.client_kwargs())


def delete_keys(
    client: redis.Redis | RedisCluster, pattern: str, *, keep_prefix: bytes | None = None
) -> int:
    """Delete (UNLINK) every key matching ``pattern``, except those under ``keep_prefix``.

    On a cluster, SCAN runs on every master and UNLINK is split per slot by the client.

    Returns:
        How many keys were deleted.
    """
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=10_000):
        if keep_prefix is not None and key.startswith(keep_prefix):
            continue
        batch.append(key)
        if len(batch) >= 10_000:
            deleted += int(client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted
