"""``redis://``: a Faust table store that keeps table state in Redis.

Registered under the ``faust.stores`` entry point as ``redis``, so any table can use it:
``app.Table("customer_windows", store="redis://127.0.0.1:6379/0")``.

How it stays fast
    Faust calls store methods synchronously on the event loop. Reads are served from a
    per-partition write-back cache (a miss costs one GET); writes only mark entries dirty.
    Dirty entries are flushed at the Faust commit cadence (``broker_commit_interval``), on
    partition revocation and on stop, one atomic Lua script per partition, each its own
    round trip from a worker thread (``RedisBackend.write``).

Two modes, chosen with the ``changelog`` option
    ``changelog=false`` (default): Redis is the durable source of truth and no changelog
    is written (the table must be a :class:`streams.tablestore.table.Table`, which
    ``create_app`` makes the default). Every write records the source offset of the
    event that made it; a flush writes the entries together with the next offset to read
    for each source partition. When a partition is assigned, the consumer group's
    committed offset is set to the one in Redis before Faust seeks to it: events whose
    effects are in Redis are never applied again, events after it are replayed onto the
    state that did not contain them. State is exact after any crash.

    Outputs stay at-least-once under one rule for agents: send an event's outputs
    (``await topic.send(...)``) before writing its table state. A flush first snapshots
    the dirty entries, then waits for the producer to deliver everything sent so far,
    and only then writes the snapshot, so Redis never records an event as applied while
    its outputs could still be lost.

    ``changelog=true``: standard Faust semantics. Every write also goes to the changelog
    topic; Redis keeps the changelog offsets with the data they cover, so a worker that
    takes a partition over replays only the changelog tail instead of all of it. Use it
    when something else reads the changelog, or for Faust windowed tables.

Ownership
    On assignment a worker claims its partitions in Redis with a token unique to it and
    the group generation; a flush from a worker that lost a partition is refused by the
    script (fencing), so a stalled former owner cannot overwrite the new owner's state.

Redis down
    Calls retry with backoff until Redis answers (see ``backend``): the worker blocks,
    acknowledges nothing meanwhile, logs the outage once, and resumes where it was.

Redis forgetting
    Redis may lose writes it acknowledged (a machine crash under ``appendfsync
    everysec`` loses the last second; a Redis restarted without its files holds
    nothing). What it keeps is a consistent prefix of the flushes, but this worker's
    cache holds the newer state, and writing on top of the prefix would make the lost
    span unrecoverable. Each partition counts its flushes in Redis (see ``lost``); the
    flush script refuses a flush whose count is behind the worker's, every flush after
    an outage checks every owned partition, and every claim compares. The worker then
    drops the affected partitions' caches, pauses their sources, records in Redis where
    sources whose offsets were lost restart (the start of the log, or a refusal when
    retention deleted part of it), and makes its consumer rejoin the group: Faust's
    rebalance seeks every partition to the offsets Redis holds and Kafka replays the lost
    span. Refused source partitions stay paused (``refusal``) until the mark is deleted.

Expiry
    Entries are written with a TTL (``ttl`` seconds, refreshed on every write), so
    entities that go quiet disappear without any scan.

Redis Cluster (``cluster=true``)
    Every key of a partition carries the partition's hash tag, so a flush, a claim or a
    read of one partition stays in one slot, on one master; partitions spread over the
    masters. ``redis://any-node:port/0?cluster=true``: the client finds the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis
from faust.stores import base
from faust.streams import current_event
from faust.types import TP, AppT, CollectionT, EventT
from mode import Service
from mode.types.signals import BaseSignalT
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from yarl import URL

from streams.faustcompat import commit as group_commit
from streams.tablestore import refusal, resume
from streams.tablestore.backend import Client, FlushOutcome, PartitionWrite, RedisBackend
from streams.tablestore.cache import MISSING, Cached, WriteBackCache
from streams.tablestore.config import StoreConfig, parse_store_config
from streams.tablestore.keys import (
    OWNER_FIELD,
    entry_key,
    offset_field,
    parse_offset_field,
    parse_refused_field,
    partition_prefix,
    refused_field,
    table_entry_pattern,
)
from streams.tablestore.lost import fenced_by_own_claim, plan_resume, sources_of, went_back
from streams.tablestore.table import send_to_changelog

logger = logging.getLogger(__name__)


def _raise_positions(positions: dict[TP, int], offsets: Mapping[TP, int]) -> None:
    """Raise each partition's position in ``positions`` to its offset in ``offsets``."""
    for tp, offset in offsets.items():
        if positions.get(tp, -1) < offset:
            positions[tp] = offset


class RedisStoreError(RuntimeError):
    """The store is used in a way it cannot serve correctly."""


class RedisStore(base.SerializedStore[Any, Any]):
    """Faust table storage in Redis, with a write-back cache and atomic flushes.

    Also a `streams.tablestore.partition_store.PartitionStore`: the agents read and
    write its entries by partition and source position (``get_in``, ``put_at``, ...),
    without Faust's table layers.
    """

    config: StoreConfig
    backend: RedisBackend

    def __init__(self, url: str | URL, app: AppT, table: CollectionT, **kwargs: Any) -> None:
        super().__init__(url, app, table, **kwargs)
        self.config = parse_store_config(
            self.url, self.options, app_defaults=getattr(app, "redis_store_defaults", None)
        )
        self.backend = RedisBackend(
            self._connect, ttl_ms=self.config.ttl_s * 1000, description=self.config.description
        )
        self.cache = WriteBackCache()
        self._prefixes: dict[int, bytes] = {}
        #: Offsets covered by the cached state, per topic partition: the next source
        #: offset to read (no-changelog mode) or the last changelog offset written.
        self._covered: dict[TP, int] = {}
        self._member = uuid.uuid4().hex[:12]
        self._owner = f"{self._member}:0"
        self._owned: set[int] = set()
        self._flush_lock = asyncio.Lock()
        self._ignored_changelog = False
        #: Per source partition, the next offset the state this worker holds needs (no
        #: changelog): Redis's offset at the last assignment, raised by every flush since;
        #: with the unflushed writes (``_covered``), where a seek resumes (`resume_offsets`).
        self._positions: dict[TP, int] = {}
        #: Source partitions with an offset in Redis, and where this worker started them.
        self._sources: set[TP] = set()
        self._start_positions: dict[TP, int] = {}
        #: Called with the seconds each flush that wrote something took (metrics).
        self.flush_observer: Callable[[float], None] | None = None
        #: Asked after the producer's flush and before each write: what refused an output
        #: for good, or None (``streams.delivery``). While it answers, nothing is written:
        #: the events whose outputs were refused must be processed again after a restart.
        self.delivery_failure: Callable[[], object | None] | None = None
        self._refusal_logged = False
        #: Per table partition, the flush count this worker last wrote or found in Redis.
        self._sequences: dict[int, int] = {}
        #: Table partitions whose writes Redis lost, until the rebalance that recovers them.
        self._lost: set[int] = set()
        self._rebalance_requested = False
        #: Lost partitions claimed again, until they resume at Redis's offsets.
        self._recovering: set[int] = set()
        #: Redis outages seen over: after each, every owned partition's count is checked.
        self._outages_seen = 0
        #: Source partitions this table refuses (Redis holds a refusal mark for them).
        self._refused_here: set[TP] = set()
        #: Called with the number of source partitions refused (metrics).
        self.refusal_observer: Callable[[int], None] | None = None
        #: Owned table partitions of which Redis held nothing at the last claim: new to
        #: this Redis, or forgotten by it (``forgotten_sources``).
        self._unknown: set[int] = set()
        if not self.config.changelog and getattr(table, "window", None) is not None:
            raise RedisStoreError(
                f"table {self.table_name}: windowed tables need changelog=true on redis://"
            )
        if not self.config.changelog and not getattr(table, "suppresses_changelog", False):
            raise RedisStoreError(
                f"table {self.table_name}: redis:// without changelog needs a "
                "streams.tablestore.Table (create_app makes it the default); "
                "or set the store option changelog=true"
            )

    def _connect(self) -> Client:
        """A client for the configured server or cluster (called on first use).

        No retries inside redis-py: the backend's own backoff retries every call, and
        logs an outage once, which redis-py's silent retries would hide. ``RedisCluster``
        takes the same ``retry``: with 0 retries it refreshes its slot map after an
        error and raises (a ``ConnectionError`` for a node that does not answer), so the
        backend waits and calls again; it still follows MOVED and ASK redirections itself.
        (``cluster_error_retry_attempts`` is deprecated and ignored once ``retry`` is set.)
        """
        retry = Retry(NoBackoff(), 0)
        if self.config.cluster:
            return RedisCluster(**self.config.client_kwargs(), retry=retry)
        return redis.Redis(**self.config.client_kwargs(), retry=retry)

    # -- identity --------------------------------------------------------------------

    @property
    def uses_changelog(self) -> bool:
        """Whether table writes also go to the Kafka changelog topic."""
        return self.config.changelog

    def entries_in_memory(self) -> int:
        """Entries in the write-back cache (absences read from Redis included)."""
        return len(self.cache)

    def stored_sizes(self) -> tuple[int, int]:
        """Entries and bytes (keys plus values) this worker's partitions hold in Redis.

        A census of the partitions owned at the call (`RedisBackend.entry_sizes`): one
        SCAN, blocking; call it from a thread (``streams.tablecensus``).
        """
        owned = set(self._owned)
        if not owned:
            return 0, 0
        pattern = table_entry_pattern(self.config.namespace, self.app.conf.id, self.table_name)
        sizes = self.backend.entry_sizes(pattern, owned)
        return sum(k for k, _ in sizes.values()), sum(b for _, b in sizes.values())

    def prefix(self, partition: int) -> bytes:
        """The Redis key prefix (hash tag included) of one partition of this table."""
        prefix = self._prefixes.get(partition)
        if prefix is None:
            prefix = self._prefixes[partition] = partition_prefix(
                self.config.namespace, self.app.conf.id, self.table_name, partition
            )
        return prefix

    # -- the byte-level primitives Faust calls ---------------------------------------

    def _get(self, key: bytes) -> bytes | None:
        event = current_event()
        if event is None:
            return self._get_outside_stream(key)
        return self.get_in(event.message.partition, key)

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._write(key, value)

    def _del(self, key: bytes) -> None:
        self._write(key, None)

    def _write(self, key: bytes, value: bytes | None) -> None:
        event = current_event()
        if event is None:
            raise RedisStoreError(
                f"table {self.table_name}: writes must happen while processing an event "
                "(the store needs its partition and offset)"
            )
        message = event.message
        self._put(message.tp, message.offset, key, value)

    # -- the same, for agents that know the event's position (PartitionStore) --------

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        """The entry of ``key`` in ``partition`` (raw bytes; None: absent).

        What ``table[key]`` does while an event of ``partition`` is current, without
        Faust's table and codec layers or the current-event lookup: agents working on
        micro-batches call it per entry, a few microseconds saved each time.
        """
        self.backend.wait_while_down()
        cached = self.cache.get(partition, key)
        if cached is not MISSING:
            return cached  # type: ignore[return-value]
        value = self.backend.get(entry_key(self.prefix(partition), key))
        self.cache.load(partition, key, value)
        return value

    def put_at(self, tp: TP, offset: int, key: bytes, value: bytes | None) -> None:
        """Write ``key`` (None deletes) for the event at ``offset`` of source ``tp``.

        What ``table[key] = value`` does while that event is current: the entry goes
        to the cache of ``tp``'s partition, and (without a changelog) the state now
        covers the event, so a restart resumes after it once this write is flushed.
        With ``changelog=true`` the write also goes to the changelog topic, as the
        table sends it (``streams.tablestore.table.send_to_changelog``).
        """
        if self.config.changelog:
            send_to_changelog(self.table, tp.partition, key, value)
        self._put(tp, offset, key, value)

    def _put(self, tp: TP, offset: int, key: bytes, value: bytes | None) -> None:
        """`put_at` minus the changelog, which a write through the table has sent already."""
        self.backend.wait_while_down()
        if not self.config.changelog:
            if tp not in self._sources:
                self._register_source(tp, offset)
            # The state now includes this event: resume after it. (An agent writing a
            # micro-batch may write an earlier event's key after a later one's.)
            resume_at = offset + 1
            if self._covered.get(tp, -1) < resume_at:
                self._covered[tp] = resume_at
        self.cache.put(tp.partition, key, value)

    def note_position(self, tp: TP, offset: int) -> None:
        """Resume ``tp`` no later than ``offset`` until a write covers it (held events).

        An agent that holds events back without writing them still has their offsets
        committed to the group by Faust; a partition that has written nothing would
        resume there after a crash or rebalance, past the held events. Recording the
        start position now (as the first write would) prevents that.
        """
        if not self.config.changelog and tp not in self._sources:
            self._register_source(tp, offset)

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def _iteritems(self) -> Iterator[tuple[bytes, bytes]]:
        for partition in sorted(self._owned | set(self.cache.partitions())):
            yield from self._partition_items(partition)

    def _iterkeys(self) -> Iterator[bytes]:
        for key, _ in self._iteritems():
            yield key

    def _itervalues(self) -> Iterator[bytes]:
        for _, value in self._iteritems():
            yield value

    def _size(self) -> int:
        return sum(1 for _ in self._iteritems())

    def _clear(self) -> None:
        for partition in sorted(self._owned | set(self.cache.partitions())):
            prefix = self.prefix(partition)
            self.backend.delete(list(self.backend.scan_entries(prefix)))
            self.cache.drop_partition(partition)

    def _get_outside_stream(self, key: bytes) -> bytes | None:
        """A read outside event processing (a web view, a test): try owned partitions."""
        for partition in sorted(self._owned | set(self.cache.partitions())):
            cached = self.cache.get(partition, key)
            if cached is MISSING:
                cached = self.backend.get(entry_key(self.prefix(partition), key))
            if cached is not None:
                return cached  # type: ignore[return-value]
        return None

    def _partition_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Redis entries of a partition, overlaid with the cache (dirty writes win)."""
        prefix = self.prefix(partition)
        cached = dict(self.cache.items(partition))
        redis_keys = [k[len(prefix) + 2 :] for k in self.backend.scan_entries(prefix)]
        missing = [k for k in redis_keys if k not in cached]
        values = self.backend.mget([entry_key(prefix, k) for k in missing])
        merged: dict[bytes, bytes | None] = dict(zip(missing, values, strict=True))
        merged.update(cached)
        for key, value in merged.items():
            if value is not None:
                yield key, value

    # -- batched reads ---------------------------------------------------------------

    def prefetch(self, partition_keys: Mapping[int, Iterable[bytes]]) -> None:
        """Load many entries into the cache: one MGET per partition, one round trip.

        Agents that work on micro-batches call this once per batch, so the per-event
        ``table[key]`` reads that follow are served from memory.
        """
        partitions: list[int] = []
        wanted: list[list[bytes]] = []
        for partition, keys in partition_keys.items():
            missing = [k for k in dict.fromkeys(keys) if self.cache.get(partition, k) is MISSING]
            if missing:
                partitions.append(partition)
                wanted.append(missing)
        if not wanted:
            return
        groups = [
            [entry_key(self.prefix(p), k) for k in keys]
            for p, keys in zip(partitions, wanted, strict=True)
        ]
        answers = self.backend.mget_groups(groups)
        for partition, keys, values in zip(partitions, wanted, answers, strict=True):
            for key, value in zip(keys, values, strict=True):
                self.cache.load(partition, key, value)

    def peek(self, partition_keys: Mapping[int, Sequence[bytes]]) -> dict[int, list[bytes | None]]:
        """Read entries of any partitions, owned by this worker or not, in one round trip.

        For lookups into a table that other workers write (the scorers read terminal
        state): entries this worker holds in its cache are served from it (they may be
        newer than Redis); the rest come from Redis as last flushed by their owner.
        Nothing is loaded into the cache, since the partitions may belong to others.

        Returns:
            Per partition, the values in the order of the keys asked (None: absent).
        """
        out: dict[int, list[bytes | None]] = {}
        partitions: list[int] = []
        groups: list[list[bytes]] = []
        positions: list[list[int]] = []
        for partition, keys in partition_keys.items():
            values: list[bytes | None] = [None] * len(keys)
            missing: list[int] = []
            for i, key in enumerate(keys):
                cached = self.cache.get(partition, key)
                if cached is MISSING:
                    missing.append(i)
                else:
                    values[i] = cached  # type: ignore[assignment]
            out[partition] = values
            if missing:
                prefix = self.prefix(partition)
                partitions.append(partition)
                positions.append(missing)
                groups.append([entry_key(prefix, keys[i]) for i in missing])
        if groups:
            answers = self.backend.mget_groups(groups)
            for partition, missing, found in zip(partitions, positions, answers, strict=True):
                values = out[partition]
                for i, value in zip(missing, found, strict=True):
                    values[i] = value
        return out

    # -- offsets ---------------------------------------------------------------------

    def persisted_offset(self, tp: TP) -> int | None:
        """The changelog offset Redis holds data up to (changelog mode), else None.

        Faust's recovery replays the changelog after this offset. Without a changelog
        there is nothing to replay: Redis itself is the state.
        """
        if not self.config.changelog:
            return None
        covered = self._covered.get(tp)
        if covered is not None:
            return covered
        stored = self.backend.read_offsets(self.prefix(tp.partition)).get(
            offset_field(tp.topic, tp.partition)
        )
        return int(stored) if stored is not None else None

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        """Note a changelog offset whose write is in the cache; it is flushed with it."""
        if self.config.changelog:
            self._covered[tp] = max(offset, self._covered.get(tp, -1))

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        """Replay changelog records into the cache (changelog mode only)."""
        if not self.config.changelog:
            if not self._ignored_changelog:
                logger.warning(
                    "table %s: ignoring changelog records: Redis is the source of truth",
                    self.table_name,
                )
                self._ignored_changelog = True
            return
        for event in batch:
            message = event.message
            if message.partition not in self._owned:
                # A standby replica: pointless with a shared Redis, and its writes would
                # be refused as the partition's owner is another worker.
                continue
            if message.key is None:
                raise TypeError(f"Changelog entry is missing key: {message}")
            self.cache.put(message.partition, message.key, message.value)
            self._covered[message.tp] = max(message.offset, self._covered.get(message.tp, -1))

    # -- life cycle ------------------------------------------------------------------

    async def on_start(self) -> None:
        """Check Redis answers and follow revocations, which must flush first."""
        await self.backend.retrying_async(self.backend.ping)
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)
        if not self.config.changelog:
            resume.install(self.app.consumer, self)
            refusal.install(self.app.consumer)

    async def on_stop(self) -> None:
        """Flush what is left, then close the connection pool."""
        await self.flush(wait_for_producer=False)
        self.backend.close()

    @Service.task
    async def _periodic_flush(self) -> None:
        interval = self.config.flush_interval_s or float(self.app.conf.broker_commit_interval)
        async for _ in self.itertimer(interval, name=f"RedisStore.flush.{self.table_name}"):
            await self.flush()
            if self._lost and not self._rebalance_requested:
                # The rebalance stops the flow, drains the agents, and seeks every
                # partition to the offsets Redis holds: the lost span is replayed.
                self._rebalance_requested = True
                await refusal.request_rebalance(self.app.consumer)

    async def _on_partitions_revoked(
        self, sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        # Faust has drained the agents and flushed the producer: the state is complete.
        await self.flush()

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        """Claim the partitions now ours; forget cached state others may have changed."""
        await self.flush()
        changelog = self.table.changelog_topic.get_topic_name()
        actives = self.app.assignor.assigned_actives()
        owned = {tp.partition for tp in assigned if tp.topic == changelog and tp in actives}
        previous_owner = self._owner
        self._owner = f"{self._member}:{generation_id}"
        partitions = sorted(owned)
        claims = self.backend.claim_partitions([self.prefix(p) for p in partitions], self._owner)
        went = {
            p
            for p, claim in zip(partitions, claims, strict=True)
            if went_back(self._sequences.get(p), claim.sequence)
        }
        if went - self._lost:
            await self._on_lost(went - self._lost)
        keep = {
            p
            for p, claim in zip(partitions, claims, strict=True)
            if claim.previous_owner is not None
            and claim.previous_owner.decode() == previous_owner
            and p not in went
            and p not in self._lost
        }
        self._sequences.update(
            (p, claim.sequence) for p, claim in zip(partitions, claims, strict=True)
        )
        self._unknown = {
            p
            for p, claim in zip(partitions, claims, strict=True)
            if claim.previous_owner is None and not claim.sequence
        }
        self._recovering = (self._lost | went) & owned
        self._lost.clear()
        self._rebalance_requested = False
        for partition in self.cache.partitions():
            if partition not in keep:
                self.cache.drop_partition(partition)
        self._covered = {tp: o for tp, o in self._covered.items() if tp.partition in keep}
        self._positions = {tp: o for tp, o in self._positions.items() if tp.partition in keep}
        self._owned = owned

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Without a changelog: note where Redis says each source partition resumes.

        Faust resumes the partitions and seeks every one to the group's committed offset
        right after this call; committing Redis's offsets makes that seek land on them,
        and the seek wrapper installed at start (``resume``) enforces them even if the
        commit failed. The flow to the streams stays stopped until then
        (``resume.hold_flow``).
        """
        if self.config.changelog:
            return
        # Before the first await: Faust resumes the partitions right after this returns.
        resume.hold_flow(self.app.consumer)
        assignment = self.app.consumer.assignment()
        stored: dict[TP, int] = {}
        refused: dict[TP, str] = {}
        for partition in sorted(self._owned):
            offsets, refusals = self._read_offsets_hash(partition)
            stored.update((tp, offset) for tp, offset in offsets.items() if tp in assignment)
            refused.update((tp, reason) for tp, reason in refusals.items() if tp in assignment)
        cleared = {tp for tp in self._refused_here - set(refused) if tp.partition in self._owned}
        if cleared:
            self._refused_here -= cleared
            for tp in sorted(refusal.release(self.app.consumer, cleared)):
                logger.warning("table %s: %s[%d] no longer refused", self.table_name, *tp)
        self._refuse(refused)
        if self._recovering:
            logger.warning(
                "table %s: partitions %s recovered: resuming at the offsets Redis holds %s",
                self.table_name,
                ",".join(str(p) for p in sorted(self._recovering)),
                {
                    f"{tp.topic}[{tp.partition}]": offset
                    for tp, offset in sorted(stored.items())
                    if tp.partition in self._recovering
                },
            )
            self._recovering = set()
        # Never behind what the state of a partition kept through the rebalance covers.
        _raise_positions(self._positions, stored)
        self._sources = set(stored)
        if stored:
            # Faust's own commit path, without its acked-offset filter (faustcompat.commit).
            committed = await group_commit.commit_offsets(self.app.consumer, stored)
            logger.info(
                "table %s: resuming %d partitions at the offsets in Redis%s",
                self.table_name,
                len(stored),
                "" if committed else " (group commit refused; seeking anyway)",
            )

    def resume_offsets(self) -> dict[TP, int]:
        """Where each source partition resumes: the next event the state does not hold.

        Redis's offsets read at the last assignment, raised by every write applied since,
        flushed or not. Asked by the seek wrapper (``resume``) at the moment it seeks, not
        at the assignment: Faust also seeks when its fetch loop got records while the flow
        was stopped, at any point of a rebalance, and an event applied between the read
        of Redis and that seek must not be applied again by the worker whose cache holds
        it (a partition kept through a rebalance keeps its cache).
        """
        if self.config.changelog:
            return {}
        positions = dict(self._positions)
        _raise_positions(positions, self._covered)
        return positions

    def stored_offsets(self, partition: int) -> dict[TP, int]:
        """The offsets Redis holds in ``partition``'s offsets hash now, one call.

        Without a changelog, where each source partition that wrote ``partition``
        resumes (what a new owner seeks to); with ``changelog=true``, the last changelog
        offset the entries cover.
        """
        return self._read_offsets_hash(partition)[0]

    def _read_offsets_hash(self, partition: int) -> tuple[dict[TP, int], dict[TP, str]]:
        """The offset fields and the refusal marks of ``partition``'s offsets hash."""
        offsets: dict[TP, int] = {}
        refused: dict[TP, str] = {}
        for field, value in self.backend.read_offsets(self.prefix(partition)).items():
            if field == OWNER_FIELD:
                continue
            named = parse_offset_field(field)
            if named is not None:
                offsets[TP(*named)] = int(value)
            named = parse_refused_field(field)
            if named is not None:
                refused[TP(*named)] = value.decode(errors="replace")
        return offsets, refused

    def unknown_partitions(self) -> set[int]:
        """Owned partitions of which Redis held nothing at all when this worker claimed them.

        Every claim leaves the partition's owner in Redis, so a partition the consumer
        group has committed offsets for was claimed before: if Redis holds nothing of it
        now, Redis lost it (restarted empty while no worker ran, or was replaced), not
        a new deployment. The seek wrapper (``resume``) asks, and treats such sources as
        never read: from the start of the log, or refused when the log lost events.
        """
        return set(self._unknown)

    def refuse_sources(self, reasons: Mapping[TP, str]) -> None:
        """Refuse source partitions whose state cannot be rebuilt (marked in Redis)."""
        for tp, reason in reasons.items():
            self.backend.record_fields(
                self.prefix(tp.partition), {refused_field(tp.topic, tp.partition): reason.encode()}
            )
        self._refuse(reasons)

    def note_start_positions(self, positions: Mapping[TP, int]) -> None:
        """Remember where this worker starts reading each assigned partition."""
        self._start_positions = dict(positions)

    def _register_source(self, tp: TP, offset: int) -> None:
        """Record a source partition's resume offset in Redis before its first write.

        Without it, a worker killed before the first flush that covers this partition
        would leave no offset in Redis, and the next owner would resume wherever the
        group's commits had got to, skipping events whose state was never stored. The
        start position is recorded (HSETNX: an offset already there wins), so those
        events are read again.
        """
        start = self._start_positions.get(tp, offset)
        self.backend.record_offset_if_absent(
            self.prefix(tp.partition), offset_field(tp.topic, tp.partition), min(start, offset)
        )
        self._sources.add(tp)

    # -- flushing --------------------------------------------------------------------

    def _restore(
        self, dirty: dict[int, dict[bytes, Cached]], covered: dict[TP, int], outages_seen: int
    ) -> None:
        """Put back what a flush took and did not write: the next flush writes it."""
        self.cache.restore_dirty(dirty)
        for tp, offset in covered.items():
            self._covered[tp] = max(offset, self._covered.get(tp, offset))
        self._outages_seen = outages_seen

    def _log_refusal(self, refusal: object) -> None:
        if not self._refusal_logged:
            self._refusal_logged = True
            logger.error(
                "table %s: writing nothing more to Redis (%s): the events since the last "
                "flush are processed again after a restart",
                self.table_name,
                refusal,
            )

    async def flush(self, *, wait_for_producer: bool = True) -> None:
        """Write every dirty entry and the offsets it covers to Redis, atomically.

        The dirty set is taken first; producer delivery is awaited before writing, so
        that no source offset reaches Redis ahead of the outputs of its events.
        """
        async with self._flush_lock:
            self._forget_lost_writes()
            dirty = self.cache.take_dirty()
            covered, self._covered = self._covered, {}
            if not self.config.changelog:  # where a seek resumes now (`resume_offsets`)
                _raise_positions(self._positions, covered)
            outages_seen, self._outages_seen = self._outages_seen, self.backend.outages_ended
            # After an outage Redis may have restarted with less than it acknowledged:
            # check every owned partition, not only those with something to write.
            verify = self._owned - self._lost if outages_seen != self._outages_seen else set()
            if not dirty and not covered and not verify:
                return
            started = time.perf_counter()
            try:
                if wait_for_producer and not self.config.changelog:
                    await self.app.producer.flush()
                refusal = self.delivery_failure() if self.delivery_failure else None
                if refusal is not None:
                    self._restore(dirty, covered, outages_seen)
                    self._log_refusal(refusal)
                    return
                writes = self._partition_writes(dirty, covered, verify)
                outcome = await self.backend.write_checked(writes, self._owner)
            except BaseException:
                self._restore(dirty, covered, outages_seen)
                raise
            lost = self._note_outcome(writes, outcome)
            if lost:
                await self._on_lost(lost)
            for write in writes:
                if write.prefix in outcome.fenced and self._partition_of(write.prefix) not in lost:
                    partition = self._partition_of(write.prefix)
                    logger.error(
                        "table %s partition %d is owned by another worker now; "
                        "dropping %d unflushed entries of it",
                        self.table_name,
                        partition,
                        len(write.entries),
                    )
                    self.cache.drop_partition(partition)
                    self._drop_positions({partition})
                    self._owned.discard(partition)
            if self.config.cache_entries and len(self.cache) > self.config.cache_entries:
                self.cache.evict_clean(self.config.cache_entries)
            if self.flush_observer is not None:
                self.flush_observer(time.perf_counter() - started)

    def _drop_positions(self, partitions: set[int]) -> None:
        """Forget where sources resume in table partitions whose cached state is dropped."""
        self._positions = {
            tp: o for tp, o in self._positions.items() if tp.partition not in partitions
        }

    def _partition_writes(
        self,
        dirty: Mapping[int, Mapping[bytes, bytes | None]],
        covered: Mapping[TP, int],
        verify: Iterable[int] = (),
    ) -> list[PartitionWrite]:
        offsets: dict[int, dict[bytes, int]] = {}
        for tp, offset in covered.items():
            offsets.setdefault(tp.partition, {})[offset_field(tp.topic, tp.partition)] = offset
        writes = []
        for partition in sorted(set(dirty) | set(offsets) | set(verify)):
            prefix = self.prefix(partition)
            entries = {
                entry_key(prefix, key): value for key, value in dirty.get(partition, {}).items()
            }
            writes.append(
                PartitionWrite(
                    prefix,
                    entries,
                    offsets.get(partition, {}),
                    self._sequences.get(partition, -1),
                )
            )
        return writes

    def _partition_of(self, prefix: bytes) -> int:
        return next(p for p, x in self._prefixes.items() if x == prefix)

    def _note_outcome(self, writes: Sequence[PartitionWrite], outcome: FlushOutcome) -> set[int]:
        """Remember the new flush counts; return the partitions Redis lost writes of."""
        lost: set[int] = set()
        for write in writes:
            partition = self._partition_of(write.prefix)
            if write.prefix in outcome.sequences:
                self._sequences[partition] = outcome.sequences[write.prefix]
            elif write.prefix in outcome.lost:
                lost.add(partition)
            elif fenced_by_own_claim(
                self._member, self._owner, outcome.fenced_by.get(write.prefix, b"")
            ):
                lost.add(partition)  # Redis lost this worker's latest claim
        return lost

    # -- Redis lost acknowledged writes ----------------------------------------------

    def _forget_lost_writes(self) -> None:
        """Drop what agents wrote to lost partitions since: Kafka will replay it."""
        for partition in self._lost:
            self.cache.drop_partition(partition)
        if self._lost:
            self._covered = {
                tp: o for tp, o in self._covered.items() if tp.partition not in self._lost
            }
            self._drop_positions(self._lost)

    async def _on_lost(self, partitions: set[int]) -> None:
        """Stop using the state of partitions whose writes Redis lost; prepare the replay.

        Their caches are dropped and their source partitions paused at once. Sources
        whose offset Redis no longer holds get one recorded (the start of the log) or a
        refusal mark, before anything else can resume them: whoever owns the partition
        next, this worker after the rebalance or another one, resumes from Redis exactly.
        """
        self._lost |= partitions
        self._forget_lost_writes()
        for partition in partitions:
            # Unknown until claimed again: the count Redis holds then is the reference.
            self._sequences.pop(partition, None)
        sources = sources_of(partitions, self._sources)
        consumer = self.app.consumer
        consumer.pause_partitions(sources)
        logger.error(
            "table %s: Redis lost acknowledged writes of partitions %s (its flush count "
            "went back); replaying them from Kafka from the offsets Redis holds",
            self.table_name,
            ",".join(str(p) for p in sorted(partitions)),
        )
        for partition in sorted(partitions):
            mine = {tp for tp in sources if tp.partition == partition}
            prefix = self.prefix(partition)
            stored = self.backend.read_offsets(prefix)
            unknown = [tp for tp in mine if offset_field(tp.topic, tp.partition) not in stored]
            earliest = dict(await consumer.earliest_offsets(*unknown)) if unknown else {}
            plan = plan_resume(mine, stored, earliest)
            fields: dict[bytes, bytes | int] = {
                offset_field(tp.topic, tp.partition): offset for tp, offset in plan.rebuild.items()
            }
            fields.update(
                (refused_field(tp.topic, tp.partition), reason.encode())
                for tp, reason in plan.refused.items()
            )
            self.backend.record_fields(prefix, fields)
            for tp in sorted(plan.rebuild):
                logger.warning(
                    "table %s: Redis holds no offset for %s[%d] any more: rebuilding its "
                    "state from the start of the log",
                    self.table_name,
                    tp.topic,
                    tp.partition,
                )
            self._refuse(plan.refused)

    def _refuse(self, refused: Mapping[TP, str]) -> None:
        """Keep these source partitions paused, with one ERROR line each, and count them."""
        consumer = self.app.consumer
        self._refused_here.update(refused)
        for tp in sorted(refusal.refuse(consumer, refused)):
            logger.error("table %s: %s", self.table_name, refused[tp])
        if self.refusal_observer is not None:
            self.refusal_observer(len(refusal.refused(consumer)))

    # -- Faust's local-state hooks (nothing is local) ---------------------------------

    def reset_state(self) -> None:
        """Nothing on local disk to reset."""

    async def backup_partition(
        self, tp: TP | int, flush: bool = True, purge: bool = False, keep: int = 1
    ) -> None:
        """Backups are Redis's business (AOF, replicas)."""

    def restore_backup(self, tp: TP | int, latest: bool = True, backup_id: int = 0) -> None:
        """Backups are Redis's business (AOF, replicas)."""
