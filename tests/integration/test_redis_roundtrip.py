"""redis-py against the real redis-server: values, pipelines and expiry round-trip."""

from __future__ import annotations

import redis

from streams.settings import Settings


def test_set_get_pipeline_and_ttl(settings: Settings, redis_client: redis.Redis) -> None:
    prefix = settings.redis_key_prefix
    pipe = redis_client.pipeline(transaction=True)
    for i in range(100):
        pipe.set(f"{prefix}:k{i}", i.to_bytes(4, "big"))
    pipe.set(f"{prefix}:expiring", b"x", px=60_000)
    pipe.execute()

    values = redis_client.mget([f"{prefix}:k{i}" for i in range(100)])
    assert values == [i.to_bytes(4, "big") for i in range(100)]
    assert 0 < redis_client.pttl(f"{prefix}:expiring") <= 60_000
    assert redis_client.get(f"{prefix}:missing") is None
