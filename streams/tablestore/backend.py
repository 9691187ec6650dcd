"""The Redis edge of the table store: atomic partition flushes, reads, retries.

Everything the store sends to Redis goes through here. A partition flush is one Lua
script over keys of one hash-tag slot: the dirty entries, the offsets they cover and an
ownership check run atomically, so Redis never holds state without its offsets (or the
reverse), and a worker that lost a partition cannot overwrite its new owner's state.

Redis unreachable: every call retries with exponential backoff (logged once per outage
that outlasts one retry, not per call) until Redis answers again. Nothing is dropped;
the caller simply waits, so a worker stops acknowledging events until its state can be
read and written.

The same code serves one server (``redis.Redis``) and a Redis Cluster (``RedisCluster``):
every command sent touches keys of one partition, so one slot, except SCAN (every master)
and the pipelined MGETs of several partitions, which the cluster client splits per node.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError

from streams.tablestore.keys import entry_pattern, offsets_key, partition_of_entry

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: What the store talks to: one server, or a cluster through any of its nodes.
Client = redis.Redis | RedisCluster

#: Errors after which the same call may succeed: the server is down, restarting or busy;
#: or a cluster is failing over, or its slot map is being rebuilt.
RETRYABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    ClusterDownError,
    SlotNotCoveredError,
)


def is_retryable(exc: BaseException) -> bool:
    """Whether the same call may succeed later (Redis down, busy or failing over).

    ``RedisCluster`` refreshes its slot map after a connection error, and when no node
    answers that refresh raises ``RedisClusterException`` (not a ``ConnectionError``)
    from the last connection error; it is the same outage, so it is retried too. Other
    ``RedisClusterException`` (a usage error, cluster mode off on the node) are not.

    A refused password and a server certificate the CA does not vouch for are not
    retried either, although redis-py raises both as ``ConnectionError``: they are the
    settings' fault, the same call fails forever, and retrying would leave a worker
    waiting behind a single warning instead of failing with the reason.
    """
    if is_misconfigured(exc):
        return False
    if isinstance(exc, RETRYABLE):
        return True
    cause = exc.__cause__
    return isinstance(exc, RedisClusterException) and cause is not None and is_retryable(cause)


def is_misconfigured(exc: BaseException) -> bool:
    """Whether Redis refused the password, or TLS refused the server's certificate.

    redis-py raises a failed certificate check as a ``ConnectionError`` made while
    handling the ``ssl`` error, so the latter is its ``__context__``.
    """
    return isinstance(exc, redis.AuthenticationError) or isinstance(
        exc.__context__, ssl.SSLCertVerificationError
    )


# KEYS[1]: offsets hash; KEYS[2..]: entry keys.
# ARGV[1]: owner token; ARGV[2]: TTL in ms (0: none); ARGV[3]: the flush sequence the
# writer last saw (-1: unknown, not checked); ARGV[4]: number of offset fields m; then m
# (field, value) pairs; then per entry key an op ('s' set, 'd' delete) and a value.
# Returns the partition's new flush sequence. The sequence found may also be one more
# than expected: this very flush ran already and its reply was lost (a retried round).
# A writer that claimed the partition (it knows a sequence) restores a claim Redis lost.
_FLUSH_SCRIPT = """
local owner = redis.call('HGET', KEYS[1], 'owner_generation')
if owner and owner ~= ARGV[1] then
  return redis.error_reply('FENCED partition owned by ' .. owner)
end
local found = tonumber(redis.call('HGET', KEYS[1], 'flush_seq') or '0')
local expected = tonumber(ARGV[3])
local next_seq = found + 1
if expected >= 0 then
  if found ~= expected and found ~= expected + 1 then
    return redis.error_reply('LOST ' .. found .. ' ' .. expected)
  end
  next_seq = expected + 1
end
if not owner and expected >= 0 then
  redis.call('HSET', KEYS[1], 'owner_generation', ARGV[1])
end
redis.call('HSET', KEYS[1], 'flush_seq', next_seq)
local m = tonumber(ARGV[4])
local ttl = tonumber(ARGV[2])
for i = 0, m - 1 do
  redis.call('HSET', KEYS[1], ARGV[5 + 2 * i], ARGV[6 + 2 * i])
end
local base = 5 + 2 * m
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
return next_seq
"""

# KEYS[1]: offsets hash; ARGV[1]: the claiming owner token.
# Returns the previous owner (nil: none) and the partition's flush sequence.
_CLAIM_SCRIPT = """
local previous = redis.call('HGET', KEYS[1], 'owner_generation')
redis.call('HSET', KEYS[1], 'owner_generation', ARGV[1])
return {previous, redis.call('HGET', KEYS[1], 'flush_seq') or '0'}
"""


@dataclass(frozen=True)
class PartitionWrite:
    """What one atomic flush writes for a partition."""

    prefix: bytes
    entries: Mapping[bytes, bytes | None]  # Redis key -> value (None deletes)
    offsets: Mapping[bytes, int]  # offsets-hash field -> offset
    #: The flush sequence the writer last saw for the partition; -1: not checked.
    expected_sequence: int = -1


@dataclass(frozen=True)
class Claim:
    """What claiming a partition found there."""

    previous_owner: bytes | None
    #: The partition's flush sequence (0: never flushed, or Redis forgot it).
    sequence: int


@dataclass
class FlushOutcome:
    """How each partition of a flush fared."""

    #: Partitions another worker owns now: their writes were refused.
    fenced: set[bytes] = field(default_factory=set)
    #: The owner token Redis holds for each fenced partition.
    fenced_by: dict[bytes, bytes] = field(default_factory=dict)
    #: Partitions whose flush sequence in Redis is behind the one expected (Redis lost
    #: acknowledged writes): prefix -> the sequence found. Their writes were refused.
    lost: dict[bytes, int] = field(default_factory=dict)
    #: Partitions written: prefix -> their new flush sequence.
    sequences: dict[bytes, int] = field(default_factory=dict)


class Backoff:
    """Exponential backoff with a cap, and one log line when an outage starts and ends.

    The WARNING that an outage started comes with the second failure in a row, not the
    first: a failure whose retry succeeds is a stale pooled connection, not an outage.
    After Redis restarts, each connection the pool still holds to the old server fails
    once when next used, and calls run in several threads: one failing just after
    another found Redis back used to log a second outage of "0.0s" (seen in CI).
    """

    def __init__(self, what: str, first_s: float = 0.05, cap_s: float = 5.0) -> None:
        self.what = what
        self.first_s = first_s
        self.cap_s = cap_s
        self._down_since: float | None = None
        self._failures = 0
        self._next_s = first_s
        #: Outages over so far: whoever must check Redis after one compares counts.
        self.outages_ended = 0

    def failed(self, exc: BaseException) -> float:
        """Record a failure; return how long to wait before the next try."""
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._failures += 1
        if self._failures == 2:
            logger.warning("%s unavailable (%s); retrying with backoff", self.what, exc)
        wait, self._next_s = self._next_s, min(self._next_s * 2, self.cap_s)
        return wait

    @property
    def in_outage(self) -> bool:
        """Whether the last call failed and no call has succeeded since."""
        return self._down_since is not None

    @property
    def down_since(self) -> float | None:
        """When the current outage began (``time.monotonic()``), or None while up."""
        return self._down_since

    def succeeded(self) -> None:
        """Record a success; log the end of an outage whose start was logged."""
        if self._down_since is not None:
            if self._failures >= 2:
                logger.warning(
                    "%s available again after %.1fs",
                    self.what,
                    time.monotonic() - self._down_since,
                )
            self._down_since = None
            self._failures = 0
            self._next_s = self.first_s
            self.outages_ended += 1


class RedisBackend:
    """Reads and atomic partition writes against one Redis server or a Redis Cluster."""

    def __init__(self, connect: Callable[[], Client], ttl_ms: int, description: str) -> None:
        """Keep ``connect`` for the first call that needs the client.

        Connecting lazily, inside a retried call: ``RedisCluster`` reads the slot map
        from a node as soon as it is made, so a cluster down while a worker builds its
        tables would fail the worker instead of making it wait like any other outage.
        """
        self._connect = connect
        self._client: Client | None = None
        self._connecting = threading.Lock()
        self.ttl_ms = ttl_ms
        self._backoff = Backoff(f"Redis at {description}")
        self._description = description
        self._refusal_logged = False
        self._scripts: dict[str, Script] = {}

    @property
    def client(self) -> Client:
        """The Redis client, made on first use (may raise what connecting raises)."""
        client = self._client
        if client is None:
            with self._connecting:  # writes run in a worker thread: make one client only
                if self._client is None:
                    made = self._connect()
                    for text in (_FLUSH_SCRIPT, _CLAIM_SCRIPT):
                        self._scripts[text] = made.register_script(text)
                    self._client = made
                client = self._client
        return client

    def _run_script(self, text: str, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """Run one of our scripts: EVALSHA, loading it first on a node that lacks it."""
        client = self.client
        return self._scripts[text](keys=keys, args=args, client=client)

    def ping(self) -> bool:
        """Ask Redis (every node of a cluster) for an answer."""
        return bool(self.client.ping())

    def close(self) -> None:
        """Close the connection pool(s), if a client was ever made."""
        if self._client is not None:
            self._client.close()

    def retrying(self, call: Callable[[], T]) -> T:
        """Run a Redis call, blocking with backoff until Redis answers."""
        while True:
            try:
                result = call()
            except Exception as exc:
                if not is_retryable(exc):
                    self._say_if_refused(exc)
                    raise
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
            except Exception as exc:
                if not is_retryable(exc):
                    self._say_if_refused(exc)
                    raise
                await asyncio.sleep(self._backoff.failed(exc))
                continue
            self._backoff.succeeded()
            return result

    def _say_if_refused(self, exc: BaseException) -> None:
        """One clear line when Redis refuses this worker's credentials or certificate.

        Not retried (`is_misconfigured`): the store's task raises it, and the worker
        stops with a dozen tracebacks of its services; this line is the one that says why.
        """
        if is_misconfigured(exc) and not self._refusal_logged:
            self._refusal_logged = True
            logger.error(
                "Redis at %s refused this worker: %s: %s. Not retried: the worker stops, and "
                "resumes from its last flush once restarted with what Redis accepts "
                "(FRAUDSTREAM_REDIS_PASSWORD, FRAUDSTREAM_REDIS_SSL_CAFILE)",
                self._description,
                type(exc).__name__,
                exc,
            )

    @property
    def outages_ended(self) -> int:
        """How many outages have ended: Redis may have restarted and forgotten writes."""
        return self._backoff.outages_ended

    @property
    def in_outage(self) -> bool:
        """Whether Redis is down: the last call failed and none has succeeded since.

        A plain attribute read, safe from other threads (the web server's).
        """
        return self._backoff.in_outage

    @property
    def down_since(self) -> float | None:
        """When the current outage began (``time.monotonic()``), or None while Redis answers.

        A plain attribute read, safe from other threads (the web server's).
        """
        return self._backoff.down_since

    def wait_while_down(self) -> None:
        """Block while an outage lasts, so the worker processes (and acks) nothing.

        Cheap when Redis is up: one attribute read. Called on the store's hot path.
        """
        if self._backoff.in_outage:
            self.retrying(self.ping)

    def get(self, key: bytes) -> bytes | None:
        """One entry."""
        value = self.retrying(lambda: self.client.get(key))
        return _as_bytes(value)

    def mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Several entries in one round trip (keys of one partition: one slot).

        On a cluster ``mget`` is redis-py's non-atomic MGET, split per slot: here one
        slot, so one MGET too.
        """
        if not keys:
            return []
        values = self.retrying(lambda: self.client.mget(keys))
        return [_as_bytes(v) for v in values]

    def mget_groups(self, groups: Sequence[Sequence[bytes]]) -> list[list[bytes | None]]:
        """Entries of several partitions in one round trip: one MGET per group, pipelined.

        A group holds keys of one partition (one hash tag, so one Redis Cluster slot).
        redis-py's cluster pipeline refuses ``pipe.mget`` (it cannot split a multi-slot
        MGET inside a pipeline), but routes a raw single-slot MGET like any keyed
        command: one round trip per node holding some of the partitions, sent together.
        """
        wanted = [keys for keys in groups if keys]
        if not wanted:
            return [[] for _ in groups]

        def call() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for keys in wanted:
                pipe.execute_command("MGET", *keys)
            return list(pipe.execute())

        answers = iter(self.retrying(call))
        return [[_as_bytes(v) for v in next(answers)] if keys else [] for keys in groups]

    def scan_entries(self, prefix: bytes) -> Iterable[bytes]:
        """Every entry key of a partition (SCAN: for iteration, never on the hot path).

        On a cluster, ``scan_iter`` runs SCAN on every master to the end of its cursor.
        The partition's slot lives on one of them, but scanning all stays right while a
        slot migrates (its keys on two nodes). SCAN may return a key more than once:
        each is listed once here.
        """
        pattern = entry_pattern(prefix)
        keys: list[bytes] = self.retrying(
            lambda: list(dict.fromkeys(self.client.scan_iter(match=pattern, count=1000)))
        )
        return keys

    def entry_sizes(
        self, pattern: bytes, partitions: Collection[int]
    ) -> dict[int, tuple[int, int]]:
        """Entries and bytes (keys plus values) per partition, of keys matching ``pattern``.

        A census, not a hot-path call: one SCAN over the keyspace (on a cluster, every
        master), and a pipelined STRLEN per thousand keys of ``partitions``; one
        attempt, no retry (an outage fails it: the next census counts again). SCAN can
        return a key twice while Redis resizes its table, so the count may be a little
        high then; keys that expire meanwhile count as empty.
        """
        client = self.client
        sizes: dict[int, list[int]] = {p: [0, 0] for p in partitions}
        batch: list[tuple[int, bytes]] = []

        def measure() -> None:
            pipe = client.pipeline(transaction=False)
            for _, key in batch:
                pipe.strlen(key)
            for (partition, key), length in zip(batch, pipe.execute(), strict=True):
                if length:
                    size = sizes[partition]
                    size[0] += 1
                    size[1] += len(key) + int(length)
            batch.clear()

        for key in client.scan_iter(match=pattern, count=1000):
            partition = partition_of_entry(key)
            if partition in sizes:
                batch.append((partition, key))
                if len(batch) >= 1000:
                    measure()
        if batch:
            measure()
        return {p: (keys, size) for p, (keys, size) in sizes.items()}

    def delete(self, keys: Sequence[bytes]) -> None:
        """Remove entries (used by clear(), with the keys of one partition).

        A cluster client splits a multi-key DEL per slot, so mixed partitions would
        still be right; one partition's keys make one DEL per chunk.
        """
        for start in range(0, len(keys), 1000):
            chunk = list(keys[start : start + 1000])
            self.retrying(lambda chunk=chunk: self.client.delete(*chunk))  # type: ignore[misc]

    def read_offsets(self, prefix: bytes) -> dict[bytes, bytes]:
        """The offsets hash of a partition, owner field included."""
        fields = self.retrying(lambda: self.client.hgetall(offsets_key(prefix)))
        return {_as_bytes(k) or b"": _as_bytes(v) or b"" for k, v in fields.items()}

    def record_fields(self, prefix: bytes, fields: Mapping[bytes, bytes | int]) -> None:
        """Set fields of a partition's offsets hash (HSET), whatever they held."""
        mapping: dict[Any, Any] = dict(fields)
        if mapping:
            self.retrying(lambda: self.client.hset(offsets_key(prefix), mapping=mapping))

    def record_offset_if_absent(self, prefix: bytes, field: bytes, offset: int) -> None:
        """Set one offset of a partition unless one is stored already (HSETNX)."""
        self.retrying(lambda: self.client.hsetnx(offsets_key(prefix), field, offset))

    def claim(self, prefixes: Sequence[bytes], owner: str) -> list[bytes | None]:
        """Make ``owner`` the only writer of these partitions; return the previous owners."""
        return [claim.previous_owner for claim in self.claim_partitions(prefixes, owner)]

    def claim_partitions(self, prefixes: Sequence[bytes], owner: str) -> list[Claim]:
        """Make ``owner`` the only writer of these partitions; say what each held.

        One script call and round trip per partition: redis-py's cluster pipeline runs
        no scripts, and claims happen only at rebalances. Each call is retried alone; a
        claim that ran but whose answer was lost returns ``owner`` on its retry, so the
        caller drops that partition's cache: safe.
        """
        claims = []
        for prefix in prefixes:
            previous, sequence = self.retrying(
                partial(self._run_script, _CLAIM_SCRIPT, [offsets_key(prefix)], [owner])
            )
            claims.append(Claim(_as_bytes(previous), int(sequence)))
        return claims

    async def write(self, writes: Sequence[PartitionWrite], owner: str) -> set[bytes]:
        """Flush partitions without sequence checks; return the fenced prefixes."""
        return (await self.write_checked(writes, owner)).fenced

    async def write_checked(self, writes: Sequence[PartitionWrite], owner: str) -> FlushOutcome:
        """Flush partitions atomically, each in one script and its own round trip.

        One round trip per partition, not one pipeline for all: Redis runs a client's
        pipelined commands back to back, so a flush of every partition (thousands of
        entries, tens of milliseconds of script time) held up the scorers' synchronous
        reads for all of it; between partitions, their reads get in. The round trips are
        made in a worker thread, so the agents do not wait for them.

        Each is a plain script call, no pipeline (a cluster pipeline runs no scripts):
        a fenced partition's "FENCED" error reply comes back as ``ResponseError`` and is
        noted while the other partitions are still written; any other error reply is
        raised once every partition was tried.

        A partition whose flush sequence in Redis is not the one its writer expects
        ("LOST") is refused too: Redis went back in time, and writing on top of what it
        holds now would make the lost span unrecoverable.

        Returns:
            The partitions fenced (owned by another worker now) and lost (Redis forgot
            writes it acknowledged): their writes were refused and the caller must deal
            with them; and the new flush sequence of every partition written.
        """
        outcome = FlushOutcome()
        if not writes:
            return outcome

        def run() -> list[Exception | int]:
            results: list[Exception | int] = []
            for write in writes:
                keys: list[bytes] = [offsets_key(write.prefix)]
                args: list[bytes | str | int] = [
                    owner,
                    self.ttl_ms,
                    write.expected_sequence,
                    len(write.offsets),
                ]
                for name, offset in write.offsets.items():
                    args += [name, offset]
                for key, value in write.entries.items():
                    keys.append(key)
                    args += [b"d", b""] if value is None else [b"s", value]
                # An error reply of one partition (FENCED) must not keep the others
                # from being written; connection errors abort the round and retry it.
                try:
                    results.append(int(self._run_script(_FLUSH_SCRIPT, keys, args)))
                except redis.ResponseError as exc:
                    if is_retryable(exc):  # a cluster failing over: retry the round
                        raise
                    results.append(exc)
            return results

        results = await self.retrying_async(run, in_thread=True)
        for write, result in zip(writes, results, strict=True):
            if isinstance(result, int):
                outcome.sequences[write.prefix] = result
            elif str(result).startswith("FENCED"):
                outcome.fenced.add(write.prefix)
                outcome.fenced_by[write.prefix] = str(result).rsplit(" ", 1)[-1].encode()
            elif str(result).startswith("LOST"):
                outcome.lost[write.prefix] = int(str(result).split()[1])
            else:
                raise result
        return outcome


def _as_bytes(value: bytes | str | None) -> bytes | None:
    """redis-py types replies as bytes or str; ours never decodes responses: bytes."""
    if isinstance(value, str):
        return value.encode()
    return value
