"""Plain Redis clients from the settings, for tools (the demo, benchmarks), not the store.

The table store builds its own client (``streams.tablestore``): retries, timeouts and
fencing are its business. Everything else that talks to Redis uses these.
"""

from __future__ import annotations

import redis

from streams.settings import Settings


def connect(settings: Settings) -> redis.Redis:
    """A client for ``settings.redis_url``, with the password from the settings."""
    password = settings.redis_password
    return redis.Redis.from_url(
        settings.redis_url, password=password.get_secret_value() if password else None
    )


def delete_keys(client: redis.Redis, pattern: str, *, keep_prefix: bytes | None = None) -> int:
    """Delete (UNLINK) every key matching ``pattern``, except those under ``keep_prefix``.

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
