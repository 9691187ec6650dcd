"""The Redis edge of the table store: atomic partition flushes, reads, retries.

Everything the store sends to Redis goes through here. A partition flush is one Lua
script over keys of one hash-tag slot: the dirty entries, the offsets they cover and an
ownership check run atomically, so Redis never holds state without its offsets (or the
reverse), and a worker that lost a partition cannot overwrite its new owner's state.

Redis unreachable: every call retries with exponential backoff (logged once per outage,
not per call) until Redis answers again. Nothing is dropped; the caller simply waits, so
a worker stops acknowledging events until its state can be read and written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from streams.tablestore.keys import entry_pattern, offsets_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors after which the same call may succeed: the server is down, restarting or busy.
RETRYABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)

# KEYS[1]: offsets hash; KEYS[2..]: entry keys.
# ARGV[1]: owner token; ARGV[2]: TTL in ms (0: none); ARGV[3]: number of offset fields m;
# then m (field, value) pairs; then per entry key an op ('s' set, 'd' delete) and a value.
_FLUSH_SCRIPT = """
local owner = redis.call('HGET', KEYS[1], 'owner_generation')
if owner and owner ~= ARGV[1] then
  return redis.error_reply('FENCED partition owned by ' .. owner)
end
local m = tonumber(ARGV[3])
local ttl = tonumber(ARGV[2])
for i = 0, m - 1 do
  redis.call('HSET', KEYS[1], ARGV[4 + 2 * i], ARGV[5 + 2 * i])
end
local base = 4 + 2 * m
for k = 2, #KEYS do
  local op = ARGV[base + 2 * (k - 2)]
  if op == 's' then
    if ttl > 0 then
      redis.call('SET', KEYS[k], ARGV[base + 2 * (k - 2) + 1], 'PX', ttl)
    else
      redis.call('SET', KEYS[k], ARGV[base + 2 * (k - 2) + 1])
    end
  else
    redis.call('DEL', KEYS[k])
  end
end
return #KEYS - 1
"""

# KEYS[1]: offsets hash; ARGV[1]: the claiming owner token. Returns the previous owner.
_CLAIM_SCRIPT = """
local previous = redis.call('HGET', KEYS[1], 'owner_generation')
redis.call('HSET', KEYS[1], 'owner_generation', ARGV[1])
return previous
"""


class PartitionFencedError(RuntimeError):
    """Another worker claimed the partition: this one must not write it any more."""


@dataclass(frozen=True)
class PartitionWrite:
    """What one atomic flush writes for a partition."""

    prefix: bytes
    entries: Mapping[bytes, bytes | None]  # Redis key -> value (None deletes)
    offsets: Mapping[bytes, int]  # offsets-hash field -> offset


class Backoff:
    """Exponential backoff with a cap, and the one log line per outage."""

    def __init__(self, what: str, first_s: float = 0.05, cap_s: float = 5.0) -> None:
        self.what = what
        self.first_s = first_s
        self.cap_s = cap_s
        self._down_since: float | None = None
        self._next_s = first_s

    def failed(self, exc: BaseException) -> float:
        """Record a failure; return how long to wait before the next try."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning("%s unavailable (%s); retrying with backoff", self.what, exc)
        wait, self._next_s = self._next_s, min(self._next_s * 2, self.cap_s)
        return wait

    @property
    def in_outage(self) -> bool:
        """Whether the last call failed and no call has succeeded since."""
        return self._down_since is not None

    def succeeded(self) -> None:
        """Record a success; log the end of an outage."""
        if self._down_since is not None:
            logger.warning(
                "%s available again after %.1fs", self.what, time.monotonic() - self._down_since
            )
            self._down_since = None
            self._next_s = self.first_s


class RedisBackend:
    """Reads and atomic partition writes against one Redis server (or cluster node set)."""

    def __init__(self, client: redis.Redis, ttl_ms: int, description: str) -> None:
        self.client = client
        self.ttl_ms = ttl_ms
        self._backoff = Backoff(f"Redis at {description}")
        self._flush = client.register_script(_FLUSH_SCRIPT)
        self._claim = client.register_script(_CLAIM_SCRIPT)

    def retrying(self, call: Callable[[], T]) -> T:
        """Run a Redis call, blocking with backoff until Redis answers."""
        while True:
            try:
                result = call()
            except RETRYABLE as exc:
                time.sleep(self._backoff.failed(exc))
                continue
            self._backoff.succeeded()
            return result

    async def retrying_async(self, call: Callable[[], T], *, in_thread: bool = False) -> T:
        """Like :meth:`retrying`, waiting without blocking the event loop.

        With ``in_thread`` the call itself runs in a worker thread too (redis-py's pool is
        thread-safe): a flush of thousands of entries takes milliseconds of round trip
        and script time during which the agents keep scoring.
        """
        while True:
            try:
                result = await asyncio.to_thread(call) if in_thread else call()
            except RETRYABLE as exc:
                await asyncio.sleep(self._backoff.failed(exc))
                continue
            self._backoff.succeeded()
            return result

    def wait_while_down(self) -> None:
        """Block while an outage lasts, so the worker processes (and acks) nothing.

        Cheap when Redis is up: one attribute read. Called on the store's hot path.
        """
        if self._backoff.in_outage:
            self.retrying(self.client.ping)

    def get(self, key: bytes) -> bytes | None:
        """One entry."""
        value = self.retrying(lambda: self.client.get(key))
        return _as_bytes(value)

    def mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Several entries in one round trip (keys of one partition: one slot)."""
        if not keys:
            return []
        values = self.retrying(lambda: self.client.mget(keys))
        return [_as_bytes(v) for v in values]

    def mget_groups(self, groups: Sequence[Sequence[bytes]]) -> list[list[bytes | None]]:
        """Entries of several partitions in one round trip: one MGET per group, pipelined.

        A group holds keys of one partition (one hash tag, so one Redis Cluster slot).
        """
        wanted = [keys for keys in groups if keys]
        if not wanted:
            return [[] for _ in groups]

        def call() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for keys in wanted:
                pipe.mget(keys)
            return list(pipe.execute())

        answers = iter(self.retrying(call))
        return [[_as_bytes(v) for v in next(answers)] if keys else [] for keys in groups]

    def scan_entries(self, prefix: bytes) -> Iterable[bytes]:
        """Every entry key of a partition (SCAN: for iteration, never on the hot path)."""
        pattern = entry_pattern(prefix)
        keys: list[bytes] = self.retrying(
            lambda: list(self.client.scan_iter(match=pattern, count=1000))
        )
        return keys

    def delete(self, keys: Sequence[bytes]) -> None:
        """Remove entries (used by clear())."""
        for start in range(0, len(keys), 1000):
            chunk = list(keys[start : start + 1000])
            self.retrying(lambda chunk=chunk: self.client.delete(*chunk))  # type: ignore[misc]

    def read_offsets(self, prefix: bytes) -> dict[bytes, bytes]:
        """The offsets hash of a partition, owner field included."""
        fields = self.retrying(lambda: self.client.hgetall(offsets_key(prefix)))
        return {_as_bytes(k) or b"": _as_bytes(v) or b"" for k, v in fields.items()}

    def record_offset_if_absent(self, prefix: bytes, field: bytes, offset: int) -> None:
        """Set one offset of a partition unless one is stored already (HSETNX)."""
        self.retrying(lambda: self.client.hsetnx(offsets_key(prefix), field, offset))

    def claim(self, prefixes: Sequence[bytes], owner: str) -> list[bytes | None]:
        """Make ``owner`` the only writer of these partitions; return the previous owners."""

        def run() -> list[bytes | None]:
            pipe = self.client.pipeline(transaction=False)
            for prefix in prefixes:
                self._claim(keys=[offsets_key(prefix)], args=[owner], client=pipe)
            return list(pipe.execute())

        return self.retrying(run) if prefixes else []

    async def write(self, writes: Sequence[PartitionWrite], owner: str) -> set[bytes]:
        """Flush partitions atomically, each in one script and its own round trip.

        One round trip per partition, not one pipeline for all: Redis runs a client's
        pipelined commands back to back, so a flush of every partition (thousands of
        entries, tens of milliseconds of script time) held up the scorers' synchronous
        reads for all of it; between partitions, their reads get in. The round trips are
        made in a worker thread, so the agents do not wait for them.

        Returns:
            The prefixes of partitions that were fenced (owned by another worker now):
            their writes were refused and must be dropped by the caller.
        """
        if not writes:
            return set()

        def run() -> list[Any]:
            results: list[Any] = []
            for write in writes:
                keys: list[bytes] = [offsets_key(write.prefix)]
                args: list[bytes | str | int] = [owner, self.ttl_ms, len(write.offsets)]
                for field, offset in write.offsets.items():
                    args += [field, offset]
                for key, value in write.entries.items():
                    keys.append(key)
                    args += [b"d", b""] if value is None else [b"s", value]
                pipe = self.client.pipeline(transaction=False)
                self._flush(keys=keys, args=args, client=pipe)
                results += pipe.execute(raise_on_error=False)
            return results

        results = await self.retrying_async(run, in_thread=True)
        fenced: set[bytes] = set()
        for write, result in zip(writes, results, strict=True):
            if isinstance(result, redis.ResponseError) and str(result).startswith("FENCED"):
                fenced.add(write.prefix)
            elif isinstance(result, Exception):
                raise result
        return fenced


def _as_bytes(value: bytes | str | None) -> bytes | None:
    """redis-py types replies as bytes or str; ours never decodes responses: bytes."""
    if isinstance(value, str):
        return value.encode()
    return value
