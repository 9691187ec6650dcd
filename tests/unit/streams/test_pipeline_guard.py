"""BatchGuard: a batch that raises is processed record by record; nothing leaves the agent."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError
from faust.exceptions import ProducerSendError
from pipeline_doubles import Event, Message, Recorder, as_events, counter
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.metrics import PipelineMetrics
from streams.pipeline.guard import BatchGuard
from streams.pipeline.inputs import InputRecord

DLQ = "dlq"


def events(*values: bytes) -> list[Event]:
    return [
        Event(b"k", value, Message("transactions", 2, 10 + i, [("traceparent", b"t")]))
        for i, value in enumerate(values)
    ]


class Stage:
    """Processes batches, raising on a poisoned value; records what it processed."""

    def __init__(self, poison: bytes = b"poison", error: Exception | None = None) -> None:
        self.poison = poison
        self.error = error or ValueError("a bug")
        self.processed: list[bytes] = []

    async def process(self, batch: Sequence[InputRecord]) -> None:
        if any(e.value == self.poison for e in batch):
            raise self.error
        self.processed += [e.value for e in batch]


async def test_a_poisoned_batch_is_processed_record_by_record() -> None:
    recorder, metrics, stage = Recorder(), PipelineMetrics(), Stage()
    guard = BatchGuard("score", recorder.send, DLQ, metrics)
    batch = events(b"a", b"poison", b"b")

    await guard.run(stage.process, as_events(batch))

    assert stage.processed == [b"a", b"b"]
    (dead,) = recorder.sends(DLQ)
    assert dead.value == b"poison"
    assert dead.header("fraudstream-problem") == b"internal_error"
    assert dead.header("fraudstream-reason") == b"agent score raised ValueError: a bug"
    assert dead.header("traceparent") == b"t"
    assert dead.header("fraudstream-source-offset") == b"11"
    assert counter(metrics, "fraudstream_records_failed_total", outcome="dead_lettered") == 1


async def test_a_record_whose_dead_letter_fails_too_is_skipped_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics, stage = PipelineMetrics(), Stage()

    async def refusing_send(*args: Any) -> None:
        raise TypeError("cannot send")

    guard = BatchGuard("score", refusing_send, DLQ, metrics)
    await guard.run(stage.process, as_events(events(b"poison", b"a")))

    assert stage.processed == [b"a"]
    assert counter(metrics, "fraudstream_records_failed_total", outcome="skipped") == 1
    assert "skipped transactions/2/10" in caplog.text


async def test_a_dependency_failing_is_not_blamed_on_the_records() -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    stage = Stage(poison=b"a", error=RedisConnectionError("refused"))
    guard = BatchGuard("score", recorder.send, DLQ, metrics)
    with pytest.raises(RedisConnectionError):
        await guard.run(stage.process, as_events(events(b"a", b"b")))
    assert recorder.sends() == []


async def test_a_dependency_failing_halts_the_agent_when_the_worker_gives_a_halt() -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    stage = Stage(poison=b"a", error=RedisConnectionError("refused"))
    halted: list[tuple[str, BaseException]] = []

    async def halt(agent: str, exc: BaseException) -> None:
        halted.append((agent, exc))
        await asyncio.Event().wait()  # never returns, as the worker's

    guard = BatchGuard("score", recorder.send, DLQ, metrics, halt)
    with pytest.raises(TimeoutError):  # the agent takes no later batch
        await asyncio.wait_for(guard.run(stage.process, as_events(events(b"a", b"b"))), 0.2)
    assert [(agent, str(exc)) for agent, exc in halted] == [("score", "refused")]
    assert recorder.sends() == []


def _producer_send_error(cause: Exception) -> ProducerSendError:
    """What Faust's producer raises for a send that fails at once (``raise ... from``)."""
    try:
        raise ProducerSendError(f"Error while sending: {cause!r}") from cause
    except ProducerSendError as exc:
        return exc


@pytest.mark.parametrize(
    "cause",
    [KafkaTimeoutError(), UnknownTopicOrPartitionError()],
    ids=["timed-out", "topic-gone"],
)
async def test_a_send_faust_wraps_is_a_dependency_failing_not_the_records(
    cause: Exception,
) -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    stage = Stage(poison=b"a", error=_producer_send_error(cause))
    halted: list[BaseException] = []

    async def halt(agent: str, exc: BaseException) -> None:
        halted.append(exc)
        await asyncio.Event().wait()

    guard = BatchGuard("score", recorder.send, DLQ, metrics, halt)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(guard.run(stage.process, as_events(events(b"a", b"b"))), 0.2)
    assert [type(exc.__cause__) for exc in halted] == [type(cause)]
    assert recorder.sends() == []  # nothing dead-lettered
    assert stage.processed == []  # nor the batch taken apart

    without_halt = BatchGuard("score", recorder.send, DLQ, metrics)
    with pytest.raises(ProducerSendError):
        await without_halt.run(stage.process, as_events(events(b"a")))
    assert recorder.sends() == []


async def test_an_error_raised_from_a_bug_is_still_the_records() -> None:
    recorder, metrics = Recorder(), PipelineMetrics()
    try:
        raise ValueError("a bug") from KeyError("x")
    except ValueError as exc:
        error = exc
    guard = BatchGuard("score", recorder.send, DLQ, metrics)
    await guard.run(Stage(error=error).process, as_events(events(b"poison", b"b")))
    (dead,) = recorder.sends(DLQ)
    assert dead.header("fraudstream-problem") == b"internal_error"
