"""Batch spans: one span per agent micro-batch, its counts, links to the inputs' traces.

The spans go to the SDK's in-memory exporter; the stages are fakes that send and count
as the real ones do, run through the real `BatchGuard`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.exporter.otlp.proto.http import trace_exporter as otlp_http
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pipeline_doubles import Event, Message, Recorder, as_events
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.batchspans import BatchSpans, RunBatch
from streams.metrics import PipelineMetrics
from streams.pipeline.guard import BatchGuard
from streams.pipeline.inputs import InputRecord
from streams.pipeline.outputs import Send
from streams.settings import Settings
from streams.tracing import SERVICE_NAME, batch_spans, exporting, traces_url

DLQ, ALERTS = "dlq", "alerts"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def traceparent(i: int, flags: str = "01") -> bytes:
    return f"00-{TRACE}-{i + 1:016x}-{flags}".encode()


def batch(values: Sequence[bytes], partitions: Sequence[int] = (0,), traced: bool = True) -> Any:
    """Events of ``values`` spread over ``partitions``, each with a traceparent if ``traced``."""
    events = []
    for i, value in enumerate(values):
        headers = [("traceparent", traceparent(i))] if traced else []
        message = Message("transactions", partitions[i % len(partitions)], i, headers)
        events.append(Event(b"k", value, message))
    return as_events(events)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> BatchSpans:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return BatchSpans(provider.get_tracer("test"), provider.shutdown)


class FakeScorer:
    """Scores as the score stage counts: alerts and dead letters sent, transactions counted.

    Value ``alert`` is alerted, ``bad`` dead-lettered, ``boom`` raises (a bug), and
    ``redis`` raises an infrastructure error; the rest are scored quietly.
    """

    def __init__(self, send: Send, metrics: PipelineMetrics, pause: bool = False) -> None:
        self.send = send
        self.metrics = metrics
        self.pause = pause

    async def process(self, events: Sequence[InputRecord]) -> None:
        values = [e.value for e in events]
        if b"boom" in values:
            raise ValueError("a bug")
        if b"redis" in values:
            raise RedisConnectionError("down")
        scored = 0
        for event in events:
            if self.pause:
                await asyncio.sleep(0)  # let the other agent's batch run in between
            if event.value == b"bad":
                await self.send(DLQ, event.key, event.value, None, None)
                continue
            if event.value == b"alert":
                await self.send(ALERTS, event.key, b"{}", None, None)
            scored += 1
        self.metrics.transactions.inc(scored)


def score_run(spans: BatchSpans, send: Send, metrics: PipelineMetrics) -> RunBatch:
    return spans.wrap(
        "score",
        BatchGuard("score", send, DLQ, metrics).run,
        source="transactions",
        dlq=DLQ,
        applied=metrics.transactions,
        applied_as="scored",
        alerts=ALERTS,
        model_version=lambda: "v7",
    )


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


async def test_a_batch_is_one_span_with_what_it_did(
    spans: BatchSpans, exporter: InMemorySpanExporter
) -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    send = spans.counting(recorder.send)
    run = score_run(spans, send, metrics)

    await run(FakeScorer(send, metrics).process, batch([b"a", b"alert", b"bad", b"b"], (0, 3)))

    span = only(exporter)
    assert span.name == "score batch"
    assert span.kind is SpanKind.CONSUMER
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": "transactions",
        "messaging.batch.message_count": 4,
        "fraudstream.agent": "score",
        "fraudstream.batch.partitions": (0, 3),
        "fraudstream.batch.scored": 3,
        "fraudstream.batch.alerts": 1,
        "fraudstream.batch.dead_letters": 1,
        "fraudstream.model.version": "v7",
    }
    assert [s.topic for s in recorder.sends()] == [ALERTS, DLQ]  # sends pass through


async def test_each_batch_has_its_own_span_and_counts(
    spans: BatchSpans, exporter: InMemorySpanExporter
) -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    send = spans.counting(recorder.send)
    run = score_run(spans, send, metrics)
    stage = FakeScorer(send, metrics)

    await run(stage.process, batch([b"alert", b"alert"]))
    await run(stage.process, batch([b"bad"]))

    first, second = exporter.get_finished_spans()
    assert (first.attributes or {})["fraudstream.batch.alerts"] == 2
    assert (second.attributes or {})["fraudstream.batch.alerts"] == 0
    assert (second.attributes or {})["fraudstream.batch.scored"] == 0
    assert (second.attributes or {})["fraudstream.batch.dead_letters"] == 1


async def test_links_point_at_the_inputs_traces(
    spans: BatchSpans, exporter: InMemorySpanExporter
) -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    send = spans.counting(recorder.send)
    events = list(batch([b"a", b"b", b"c"]))
    events[1].message.headers = [("traceparent", b"not one")]  # invalid: no link
    events[2].message.headers = [("traceparent", traceparent(2, flags="00"))]

    await score_run(spans, send, metrics)(FakeScorer(send, metrics).process, events)

    links = only(exporter).links
    assert [f"{link.context.trace_id:032x}" for link in links] == [TRACE, TRACE]
    assert [link.context.span_id for link in links] == [1, 3]
    assert [int(link.context.trace_flags) for link in links] == [1, 0]
    assert all(link.context.is_remote for link in links)


async def test_links_are_bounded_and_untraced_inputs_have_none(
    spans: BatchSpans, exporter: InMemorySpanExporter
) -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    send = spans.counting(recorder.send)
    run = score_run(spans, send, metrics)
    stage = FakeScorer(send, metrics)

    await run(stage.process, batch([b"a"] * 100))
    await run(stage.process, batch([b"a"] * 5, traced=False))

    busy, untraced = exporter.get_finished_spans()
    assert len(busy.links) == spans.max_links == 32
    assert busy.links[-1].context.span_id == 32  # the first inputs
    assert not untraced.links


async def test_a_failed_batch_taken_apart_is_still_one_span(
    spans: BatchSpans, exporter: InMemorySpanExporter
) -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    send = spans.counting(recorder.send)

    await score_run(spans, send, metrics)(
        FakeScorer(send, metrics).process, batch([b"a", b"boom", b"b"])
    )

    span = only(exporter)
    assert (span.attributes or {})["fraudstream.batch.scored"] == 2
    assert (span.attributes or {})["fraudstream.batch.dead_letters"] == 1  # the guard's
    assert span.status.status_code is StatusCode.UNSET


async def test_an_infrastructure_error_ends_the_span_as_an_error_and_is_raised(
    spans: BatchSpans, exporter: InMemorySpanExporter
) -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    send = spans.counting(recorder.send)

    with pytest.raises(RedisConnectionError):
        await score_run(spans, send, metrics)(FakeScorer(send, metrics).process, batch([b"redis"]))

    span = only(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["messaging.batch.message_count"] == 1
    assert [e.name for e in span.events] == ["exception"]


async def test_agents_interleaving_on_the_loop_count_only_their_own_sends(
    spans: BatchSpans, exporter: InMemorySpanExporter
) -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    send = spans.counting(recorder.send)
    score = score_run(spans, send, metrics)

    async def reports(events: Sequence[InputRecord]) -> None:
        for event in events:
            await asyncio.sleep(0)
            await send(DLQ, event.key, event.value, None, None)
        metrics.fraud_reports.inc(0)

    frauds = spans.wrap(
        "terminal_frauds",
        BatchGuard("terminal_frauds", send, DLQ, metrics).run,
        source="fraud-reports",
        dlq=DLQ,
        applied=metrics.fraud_reports,
        applied_as="applied",
    )

    await asyncio.gather(
        score(FakeScorer(send, metrics, pause=True).process, batch([b"a", b"bad", b"a"])),
        frauds(reports, batch([b"x", b"y", b"z", b"w"], traced=False)),
    )

    by_name = {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}
    assert by_name["score batch"]["fraudstream.batch.dead_letters"] == 1
    assert by_name["terminal_frauds batch"]["fraudstream.batch.dead_letters"] == 4
    assert by_name["terminal_frauds batch"]["fraudstream.batch.applied"] == 0
    assert "fraudstream.batch.alerts" not in by_name["terminal_frauds batch"]
    assert "fraudstream.model.version" not in by_name["terminal_frauds batch"]


async def test_sends_outside_a_traced_batch_are_not_counted(spans: BatchSpans) -> None:
    recorder = Recorder()
    await spans.counting(recorder.send)(DLQ, None, b"x", None, None)
    assert len(recorder.sends(DLQ)) == 1


async def test_forwards_name_the_score_batch_and_the_terminal_batch_links_to_it(
    spans: BatchSpans, exporter: InMemorySpanExporter
) -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    send = spans.counting(recorder.send)
    own = [("traceparent", traceparent(7))]

    async def scorer(events: Sequence[InputRecord]) -> None:
        # Forwards go without headers; an alert has its own traceparent (kept as it is).
        await send("forwards", None, b"rows", 2, None)
        await send(ALERTS, b"k", b"{}", None, list(own))
        metrics.transactions.inc(len(events))

    await score_run(spans, send, metrics)(scorer, batch([b"a", b"b"], traced=False))
    score_span = only(exporter)
    forward, alert = recorder.sends()
    context = score_span.context
    assert context is not None
    assert (
        forward.header("traceparent")
        == (
            f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
        ).encode()
    )
    assert alert.headers == own

    exporter.clear()
    message = Message("forwards", 2, 0, forward.headers)
    terminal = spans.wrap(
        "terminal_activity",
        BatchGuard("terminal_activity", send, DLQ, metrics).run,
        source="forwards",
        dlq=DLQ,
        applied=metrics.terminal_transactions,
        applied_as="applied",
    )

    async def apply(events: Sequence[InputRecord]) -> None:
        metrics.terminal_transactions.inc(0)

    await terminal(apply, as_events([Event(None, forward.value, message)]))
    [link] = only(exporter).links
    assert (link.context.trace_id, link.context.span_id) == (context.trace_id, context.span_id)


async def test_sends_outside_a_traced_batch_get_no_traceparent(spans: BatchSpans) -> None:
    recorder = Recorder()
    await spans.counting(recorder.send)("forwards", None, b"tick", 0, None)
    [tick] = recorder.sends()
    assert tick.headers is None


# --- configuration ------------------------------------------------------------------------


def test_off_by_default(tmp_path: Path) -> None:
    assert batch_spans(Settings(local_dir=tmp_path)) is None


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("https://collector.example:4318/", "https://collector.example:4318/v1/traces"),
        ("http://127.0.0.1:4318/custom/traces", "http://127.0.0.1:4318/custom/traces"),
    ],
)
def test_an_endpoint_without_a_path_gets_the_traces_path(endpoint: str, url: str) -> None:
    assert traces_url(endpoint) == url


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4318", "grpc://127.0.0.1:4317", "http://"])
def test_an_endpoint_must_be_an_http_url(endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="otlp_endpoint"):
        Settings(local_dir=tmp_path, otlp_endpoint=endpoint)


def test_configured_tracing_exports_as_the_worker_service(tmp_path: Path) -> None:
    settings = Settings(local_dir=tmp_path, otlp_endpoint="http://127.0.0.1:9/", app_id="a1")
    spans = batch_spans(settings)
    assert spans is not None
    resource = spans.tracer.resource  # type: ignore[attr-defined]
    assert resource.attributes["service.name"] == SERVICE_NAME == "fraudstream-worker"
    assert resource.attributes["fraudstream.app_id"] == "a1"
    spans.close()  # nothing queued: nothing sent
    spans.close()  # once only


class FakeOtlp(SpanExporter):
    """Stands in for the OTLP/HTTP exporter: records its endpoint and what it is given."""

    made: ClassVar[list[FakeOtlp]] = []

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.exported: list[ReadableSpan] = []
        self.stopped = False
        FakeOtlp.made.append(self)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += spans
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.stopped = True


async def test_configured_spans_are_batched_to_the_otlp_exporter_and_flushed_on_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(FakeOtlp, "made", [])
    monkeypatch.setattr(otlp_http, "OTLPSpanExporter", FakeOtlp)
    spans = exporting("http://127.0.0.1:9/v1/traces", "a1")
    recorder, metrics = Recorder(), PipelineMetrics()
    send = spans.counting(recorder.send)

    await score_run(spans, send, metrics)(FakeScorer(send, metrics).process, batch([b"a"]))
    spans.close()

    (exporter,) = FakeOtlp.made
    assert exporter.endpoint == "http://127.0.0.1:9/v1/traces"
    assert [s.name for s in exporter.exported] == ["score batch"]
    assert exporter.stopped


#: Builds a worker's pipeline as ``fraudstream worker`` does, with OpenTelemetry made
#: unimportable: redis-py imports its metrics SDK when installed (and does without it),
#: so what is checked is that nothing of ours needs or loads it with tracing off.
NO_OTEL_WORKER = """
import json, sys
from importlib.abc import MetaPathFinder

class NoOpenTelemetry(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError(f"{name} imported with tracing off")
        return None

sys.meta_path.insert(0, NoOpenTelemetry())

from streams.app import create_app
from streams.pipeline import build_pipeline
from streams.settings import Settings
import streams.cli.worker

settings = Settings.model_validate({"local_dir": sys.argv[1], "table_store": "memory://"})
pipeline = build_pipeline(create_app(settings), settings)
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry", "streams.batchspans")))
print(json.dumps({"spans": pipeline.spans is not None, "loaded": loaded}))
"""


def test_a_worker_with_tracing_off_never_imports_opentelemetry(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no FRAUDSTREAM_OTLP_ENDPOINT
    done = subprocess.run(
        [sys.executable, "-c", NO_OTEL_WORKER, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"spans": False, "loaded": []}


def test_a_worker_with_tracing_on_builds_its_batch_spans(tmp_path: Path) -> None:
    from streams.app import create_app
    from streams.pipeline import build_pipeline

    settings = Settings.model_validate(
        {
            "local_dir": tmp_path,
            "table_store": "memory://",
            "app_id": "tracing-on",
            "otlp_endpoint": "http://127.0.0.1:9",
        }
    )
    pipeline = build_pipeline(create_app(settings), settings)
    assert pipeline.spans is not None
    pipeline.spans.close()  # no batch ran: nothing to send
