"""redis:// writes nothing while an output is refused for good (``streams.delivery``).

The flush asks ``delivery_failure`` after the producer's flush and before writing: an
event whose output Kafka refused must not have its offset in Redis, or a restart would
never process it (and send its output) again.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from faust.types import TP

from streams.settings import Settings
from streams.tablestore import RedisStore
from streams.tablestore.keys import entry_key, offset_field, offsets_key


async def test_a_flush_after_a_refused_output_writes_nothing_and_keeps_it_all(
    settings: Settings, redis_client: redis.Redis, make_store: Callable[..., RedisStore]
) -> None:
    store = make_store(settings, "refused", 2, settings.redis_url)
    refusal: list[str] = ["Kafka refused an output to alerts[0]"]
    store.delivery_failure = lambda: refusal[0] if refusal else None
    for offset, key in enumerate((b"C1", b"C2", b"C3")):
        store.put_at(TP("transactions", 0), offset, key, b"state-" + key)

    await store.flush(wait_for_producer=False)
    await store.flush(wait_for_producer=False)  # every flush, not the first only

    prefix = store.prefix(0)
    resume_at = offset_field("transactions", 0)
    assert redis_client.exists(entry_key(prefix, b"C1")) == 0
    # Only where the source started is in Redis (its first event: nothing is applied).
    assert int(redis_client.hget(offsets_key(prefix), resume_at) or 0) == 0
    # Nothing is dropped either: were the refusal to end, the next flush writes it all.
    refusal.clear()
    await store.flush(wait_for_producer=False)
    assert redis_client.get(entry_key(prefix, b"C3")) == b"state-C3"
    assert int(redis_client.hget(offsets_key(prefix), resume_at) or 0) == 3
