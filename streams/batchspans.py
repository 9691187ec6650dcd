"""One OpenTelemetry span per micro-batch of each agent, linked to its inputs' traces.

A payment's trace reaches the worker as a ``traceparent`` header on the transaction
(``streams.tracecontext``). The worker handles transactions by the hundred, so a span
per event would cost more than the scoring; instead each agent's micro-batch gets one
span (kind CONSUMER, as OpenTelemetry's messaging conventions have batch processing),
with a link to the trace of each input that carries one (at most `MAX_LINKS`), so a
trace backend shows, from a payment's trace, the batch that scored it. Its attributes
say what the batch did: records in, partitions, dead letters, and per agent what it
applied (transactions scored and alerts sent with the model version; terminal
transactions or fraud reports recorded). The scorer's forward messages carry its batch
span's ``traceparent`` (`BatchSpans.counting`), so a ``terminal_activity`` batch links to
the score batches whose rows it applied.

Only imported when tracing is configured (``streams.tracing``): with tracing off the
worker neither imports OpenTelemetry nor calls anything here.

The counts come from the batch itself, never from shared totals alone: the three agents
interleave on one event loop, so a dead letter is counted by the ``send`` wrapper
(`BatchSpans.counting`) into the batch of the task that sent it (a context variable is
per asyncio task), and applied records by the agent's own counter, which only that agent
increments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any, Final

from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
    get_current_span,
)
from prometheus_client import Counter

from streams.pipeline.guard import Process
from streams.pipeline.inputs import InputRecord
from streams.pipeline.outputs import Headers, Send
from streams.tracecontext import TRACEPARENT, parent_of

#: Most links a batch span carries: enough to find a payment's batch, bounded per span.
MAX_LINKS: Final = 32

#: ``BatchGuard.run``: runs a stage's batch.
RunBatch = Callable[[Process, Sequence[InputRecord]], Awaitable[None]]

#: Messages sent per topic by the current task's batch; None outside a traced batch.
_sends: ContextVar[dict[str, int] | None] = ContextVar("fraudstream_batch_sends", default=None)


class BatchSpans:
    """Wraps the agents' batch runs in spans.

    Args:
        tracer: Where spans go (the OTLP exporter's provider, or a test's).
        close: Flushes and stops the exporter; called once when the worker stops.
        max_links: Most links per span.
    """

    def __init__(
        self,
        tracer: Tracer,
        close: Callable[[], None] | None = None,
        *,
        max_links: int = MAX_LINKS,
    ) -> None:
        self.tracer = tracer
        self._close = close
        self.max_links = max_links

    def counting(self, send: Send) -> Send:
        """``send`` that also counts each message into the sending task's batch, by topic.

        A message a traced batch sends without headers gets the batch span's
        ``traceparent``: those are the scorer's forwards (``streams.pipeline.forwards``),
        one message for the rows of many transactions, so no transaction's trace is
        theirs (each row carries its own); the terminal agent's batch span then links to
        the score batches whose forwards it applied. Every other message the agents send
        has headers of its own (alerts and score records a child of their transaction's
        trace, dead letters their input's headers), and sends outside a batch (watermark
        ticks) have no span to name.
        """

        async def counted(
            topic: str,
            key: bytes | None,
            value: bytes | None,
            partition: int | None,
            headers: Headers | None,
        ) -> Any:
            counts = _sends.get()
            if counts is not None:
                counts[topic] = counts.get(topic, 0) + 1
                if headers is None:
                    headers = _current_traceparent()
            return await send(topic, key, value, partition, headers)

        return counted

    def wrap(
        self,
        agent: str,
        run: RunBatch,
        *,
        source: str,
        dlq: str,
        applied: Counter,
        applied_as: str,
        alerts: str | None = None,
        model_version: Callable[[], str | None] | None = None,
    ) -> RunBatch:
        """``run`` with a span around each batch.

        Args:
            agent: The agent's name (the span is ``"<agent> batch"``).
            run: The agent's guarded batch run.
            source: The topic the agent reads.
            dlq: The dead-letter topic: messages sent there are the batch's dead letters.
            applied: The counter of records the agent applies (only it increments it).
            applied_as: The attribute naming that count, ``fraudstream.batch.<applied_as>``.
            alerts: The alerts topic, for an agent that sends alerts.
            model_version: The active model's version, for an agent that scores.
        """
        name = f"{agent} batch"
        fixed = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": source,
            "fraudstream.agent": agent,
        }
        applied_key = f"fraudstream.batch.{applied_as}"

        async def traced(process: Process, events: Sequence[InputRecord]) -> None:
            counts: dict[str, int] = {}
            token = _sends.set(counts)
            before = _value(applied)
            try:
                with self.tracer.start_as_current_span(
                    name, kind=SpanKind.CONSUMER, links=self.links(events), attributes=fixed
                ) as span:
                    try:
                        await run(process, events)
                    finally:
                        span.set_attribute("messaging.batch.message_count", len(events))
                        span.set_attribute(
                            "fraudstream.batch.partitions",
                            sorted({e.message.partition for e in events}),
                        )
                        span.set_attribute("fraudstream.batch.dead_letters", counts.get(dlq, 0))
                        span.set_attribute(applied_key, int(_value(applied) - before))
                        if alerts is not None:
                            span.set_attribute("fraudstream.batch.alerts", counts.get(alerts, 0))
                        if model_version is not None:
                            version = model_version()
                            if version is not None:
                                span.set_attribute("fraudstream.model.version", version)
            finally:
                _sends.reset(token)

        return traced

    def links(self, events: Sequence[InputRecord]) -> list[Link]:
        """Links to the traces of the first inputs (at most `max_links`) with a traceparent."""
        links: list[Link] = []
        for event in events:
            parent = parent_of(event.message.headers)
            if parent is None:
                continue
            links.append(Link(_span_context(parent)))
            if len(links) >= self.max_links:
                break
        return links

    def close(self) -> None:
        """Export the spans still queued and stop the exporter (the worker is stopping)."""
        if self._close is not None:
            self._close()
            self._close = None


def _current_traceparent() -> Headers | None:
    """A ``traceparent`` header naming the current span (the batch's), if there is one."""
    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    flags = int(context.trace_flags)
    value = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    return [(TRACEPARENT, value.encode())]


def _span_context(traceparent: bytes) -> SpanContext:
    """The remote span a valid version-00 ``traceparent`` (`parent_of`) names."""
    return SpanContext(
        trace_id=int(traceparent[3:35], 16),
        span_id=int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(traceparent[53:55], 16)),
    )


def _value(counter: Counter) -> float:
    """A label-less (or labelled child) counter's value: its ``_total`` sample.

    prometheus-client has no public getter but ``collect()`` (about 3 us, twice a batch
    and only while tracing is on).
    """
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                return float(sample.value)
    return 0.0
