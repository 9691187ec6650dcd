"""The terminal agents' work: per-terminal transaction and fraud history, off the critical path.

Two agents write one table of terminal window states (``features.online.EntityState``),
partitioned by terminal id:

- terminal_activity reads ``transactions-by-terminal`` (the valid transactions of each
  scorer micro-batch, one message per terminal partition, each row with its source
  partition and offset: ``streams.pipeline.forwards``) and records them;
- terminal_frauds reads ``fraud-reports`` and records each report by its transaction's
  time (a duplicate report is recognised and ignored by the state itself). Reports are
  untrusted input like transactions: over the size limit, timed in the future or not
  decodable, they are dead-lettered; on another partition than their terminal's, they
  are re-routed there (``streams.pipeline.intake``).

Both topics have the same partition count and key, so Faust gives partition p of both
to one worker (co-partitioning) and both agents write p of the table. Micro-batches
decode each touched state once and encode it once. Rows replayed after a scorer's
crash are recognised by their source offset and skipped (``streams.pipeline.terminals``),
so a terminal never counts a transaction twice. A row outside the terminal's retention
is dead-lettered alone, as a JSON object of its fields with the forward message's
position and, when its transaction came with a valid ``traceparent`` (carried on the
forward), a child of that trace as its own ``traceparent``; a forward message that does
not decode is dead-lettered whole.

The score agent reads these states for the terminal features once they are final. With
the states, in the same write, each partition keeps its watermarks: per source partition
the watermark its scorer declared (in the replay mark), and the newest ``reported_at``
applied and whether the report partition is read to its end (the report entry); see
``streams.pipeline.watermarks`` and docs/operations.md, "Feature parity".
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Final

from features.online import EntityState, EntityWindows, EventTooOldError
from streams.contracts import DecodeError, Problem, decode_fraud_report
from streams.metrics import PipelineMetrics
from streams.pipeline.forwards import ForwardRow, decode_forward_message, row_value
from streams.pipeline.inputs import InputRecord
from streams.pipeline.intake import EventKind, Intake
from streams.pipeline.outputs import Send, send_dead_letter, send_dead_letters
from streams.pipeline.tables import DecodedStates, TableAccess
from streams.pipeline.terminals import mark_key
from streams.pipeline.watermarks import ReportMark, SourceMark, report_key
from streams.records import FraudReport
from streams.tablestore.partition_store import PartitionStore
from streams.tracecontext import child_of


def _report_wrong_key(key: bytes | None) -> DecodeError:
    return DecodeError(
        Problem.WRONG_KEY,
        "fraud reports must be keyed by terminal_id, the key of the terminal state they update",
    )


#: The fraud-reports topic's events, for `Intake.admit`.
REPORTS: Final[EventKind[FraudReport]] = EventKind(
    decode=decode_fraud_report,
    key=attrgetter("terminal_id"),
    wrong_key=_report_wrong_key,
    time_ms=attrgetter("reported_at"),
    time_field="reported_at",
)


class TerminalStage:
    """Applies forwarded transactions and fraud reports to the terminal table.

    Args:
        windows: The terminal windows of the feature set.
        table: The terminal table's store (bytes keys and values).
        send: Queues a message on the producer (dead letters).
        dlq: The dead-letter topic.
        metrics: The worker's metrics.
        max_event_bytes: Larger fraud reports are dead-lettered unread.
        intake: The partition and time checks of fraud reports (default: no partition
            check, reports up to five minutes ahead of the clock).
        decoded: The decoded terminal states kept between micro-batches; shared with the
            scorer's `streams.pipeline.terminals.TerminalLookup` (default: its own).
    """

    def __init__(
        self,
        *,
        windows: EntityWindows,
        table: PartitionStore,
        send: Send,
        dlq: str,
        metrics: PipelineMetrics,
        max_event_bytes: int = 65_536,
        intake: Intake | None = None,
        decoded: DecodedStates | None = None,
    ) -> None:
        self.windows = windows
        self.table = table
        self.send = send
        self.dlq = dlq
        self.metrics = metrics
        self.max_event_bytes = max_event_bytes
        self.intake = intake or Intake(
            partitions=None, max_ahead_ms=300_000, send=send, metrics=metrics
        )
        self.access = TableAccess(table)
        self.decoded = DecodedStates("terminal") if decoded is None else decoded

    async def process_transactions(self, events: Sequence[InputRecord]) -> None:
        """Record a micro-batch of forward messages; skip rows already applied."""
        batch = _Batch(self)
        rejected: list[tuple[InputRecord, DecodeError]] = []
        decoded: list[tuple[InputRecord, list[ForwardRow], dict[int, int], dict[int, bytes]]] = []
        for event in events:
            message = decode_forward_message(event.value)
            if isinstance(message, DecodeError):
                rejected.append((event, message))
                continue
            rows, declared, traces = message
            decoded.append((event, rows, declared, traces))
            partition = event.message.partition
            sources = set(declared)
            for row in rows:
                batch.want(event, row.terminal_id.encode())
                sources.add(row.source_partition)
            for source in sources:
                batch.want(event, mark_key(partition, source))
        batch.load()
        late: list[tuple[InputRecord, DecodeError, bytes, bytes | None]] = []
        skipped = applied = 0
        newest = 0
        record = self.windows.record
        for event, rows, declared, traces in decoded:
            # Each source's applied offset as the rows move it: one mark per source and
            # message, not one per row, set before the message's declarations read it.
            applied_through: dict[int, int] = {}
            for index, row in enumerate(rows):
                source = row.source_partition
                through = applied_through.get(source)
                if through is None:
                    through = batch.mark(event, source).offset
                if row.source_offset <= through:
                    skipped += 1
                    continue
                applied_through[source] = row.source_offset
                key = row.terminal_id.encode()
                state = batch.state(event, key)
                try:
                    record(state, row.tx_time, row.amount, row.customer_id)
                except EventTooOldError as exc:
                    problem = DecodeError(Problem.TOO_LATE, str(exc), "tx_time")
                    parent = traces.get(index)
                    trace = None if parent is None else child_of(parent)
                    late.append((event, problem, row_value(row), trace))
                    continue
                batch.changed(event, key)
                applied += 1
                if row.tx_time > newest:
                    newest = row.tx_time
            for source, offset in applied_through.items():
                batch.set_offset(event, source, offset)
            # After the rows: a message's declaration covers the rows it holds.
            for source, watermark in declared.items():
                batch.declare(event, source, watermark)
        await send_dead_letters(self.send, self.dlq, rejected, self.metrics)
        for event, problem, value, trace in late:
            await send_dead_letter(
                self.send, self.dlq, event, problem, self.metrics, value=value, traceparent=trace
            )
        batch.write()
        self.metrics.terminal_transactions.inc(applied)
        if skipped:
            self.metrics.duplicates_skipped.labels(source="transactions").inc(skipped)
        if newest:
            self.metrics.observe_event_times(terminal_ms=newest)

    async def process_reports(self, events: Sequence[InputRecord]) -> None:
        """Record a micro-batch of fraud reports."""
        batch = _Batch(self)
        decoded, rejected = await self.intake.admit(events, REPORTS, self.max_event_bytes)
        for event, report in decoded:
            batch.want(event, report.terminal_id.encode())
            batch.want(event, report_key(event.message.partition))
        batch.load()
        stored = duplicates = 0
        for event, report in decoded:
            key = report.terminal_id.encode()
            state = batch.state(event, key)
            if self.windows.record_fraud(state, report.tx_time, report.tx_id, report.reported_at):
                batch.changed(event, key)
                stored += 1
            else:
                duplicates += 1
        await send_dead_letters(self.send, self.dlq, rejected, self.metrics)
        # Every report of the batch is applied (or refused): the partition's report entry
        # moves to the next offset and the newest report time applied.
        following: dict[int, InputRecord] = {}
        for event in events:
            last = following.get(event.message.partition)
            if last is None or event.message.offset > last.message.offset:
                following[event.message.partition] = event
        newest: dict[int, int] = {}
        for event, report in decoded:
            partition = event.message.partition
            if report.reported_at > newest.get(partition, -1):
                newest[partition] = report.reported_at
        for partition, event in following.items():
            batch.note_reports(event, newest.get(partition, -1), event.message.offset + 1)
        batch.write()
        self.metrics.fraud_reports.inc(stored)
        if duplicates:
            self.metrics.duplicates_skipped.labels(source="fraud_reports").inc(duplicates)


class _Batch:
    """The table entries one micro-batch touches: loaded once, written once each.

    Entries are addressed by (partition, key): the same terminal key can only occur in
    one partition, but marks (`mark_key`) and report entries (`report_key`) exist in
    every partition.
    """

    def __init__(self, stage: TerminalStage) -> None:
        self.access = stage.access
        self.decoded = stage.decoded
        self.wanted: dict[int, list[bytes]] = {}
        self.states: dict[tuple[int, bytes], EntityState] = {}
        self.marks: dict[tuple[int, bytes], SourceMark] = {}
        self.reports: dict[tuple[int, bytes], ReportMark] = {}
        self.last: dict[tuple[int, bytes], InputRecord] = {}

    def want(self, event: InputRecord, key: bytes) -> None:
        self.wanted.setdefault(event.message.partition, []).append(key)

    def load(self) -> None:
        self.access.prefetch(self.wanted)

    def state(self, event: InputRecord, key: bytes) -> EntityState:
        partition = event.message.partition
        slot = (partition, key)
        state = self.states.get(slot)
        if state is None:
            raw = self.access.get(event, key)
            state = self.states[slot] = self.decoded.take(partition, key, raw)
        return state

    def mark(self, event: InputRecord, source_partition: int) -> SourceMark:
        return self._mark(event, source_partition)[1]

    def _mark(
        self, event: InputRecord, source_partition: int
    ) -> tuple[tuple[int, bytes], SourceMark]:
        partition = event.message.partition
        slot = (partition, mark_key(partition, source_partition))
        mark = self.marks.get(slot)
        if mark is None:
            mark = self.marks[slot] = SourceMark.from_bytes(self.access.get(event, slot[1]))
        return slot, mark

    def set_offset(self, event: InputRecord, source_partition: int, offset: int) -> None:
        slot, mark = self._mark(event, source_partition)
        self.marks[slot] = SourceMark(offset, mark.watermark)
        self.last[slot] = event

    def declare(self, event: InputRecord, source_partition: int, watermark: int) -> None:
        slot, mark = self._mark(event, source_partition)
        changed = mark.declared(watermark)
        if changed is not mark:
            self.marks[slot] = changed
            self.last[slot] = event

    def _report(self, event: InputRecord) -> tuple[tuple[int, bytes], ReportMark]:
        slot = (event.message.partition, report_key(event.message.partition))
        mark = self.reports.get(slot)
        if mark is None:
            mark = self.reports[slot] = ReportMark.from_bytes(self.access.get(event, slot[1]))
        return slot, mark

    def note_reports(self, event: InputRecord, reported_at: int, following: int) -> None:
        """``event``'s partition applied its reports up to ``following`` (the next offset)."""
        slot, mark = self._report(event)
        changed = mark.advanced(reported_at, following)
        if changed is not mark:
            self.reports[slot] = changed
            self.last[slot] = event

    def changed(self, event: InputRecord, key: bytes) -> None:
        self.last[(event.message.partition, key)] = event

    def write(self) -> None:
        """Write every changed entry under the last event that changed it."""
        put = self.access.put
        for slot, event in self.last.items():
            partition, key = slot
            mark = self.marks.get(slot)
            if mark is not None:
                put(event, key, mark.to_bytes())
                continue
            report = self.reports.get(slot)
            if report is not None:
                put(event, key, report.to_bytes())
                continue
            state = self.states[slot]
            raw = state.to_bytes()
            put(event, key, raw)
            self.decoded.keep(partition, key, raw, state)
