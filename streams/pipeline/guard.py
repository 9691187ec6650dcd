"""No exception leaves an agent: a micro-batch that raises is taken apart record by record.

The stages turn every kind of bad input they know into a dead letter. Whatever they do
not know (a bug, an input nobody thought of) raises; raised out of a Faust agent it
would stop the agent's stream, and the records of the batch, the good ones included,
would be acknowledged by nobody or lost to a later commit. `BatchGuard` catches it: the
batch is processed again one record at a time, so every record that can be processed
is, and each one that still raises is dead-lettered ``internal_error`` with the
exception in its reason (its original bytes and headers, replayable after a fix). If
even the dead letter cannot be sent, the record is skipped with an ERROR line naming
topic, partition and offset, and counted: the one outcome that loses a record, and never
a silent one.

Failures of the worker's own dependencies are not the record's fault: a Redis, Kafka or
OS error (`INFRASTRUCTURE_ERRORS`), or an error raised from one (Faust's producer raises
``ProducerSendError`` from the ``KafkaError`` of a send that failed at once: a topic
deleted, a send that waited longer than the request timeout for room in a full
producer), is never dead-lettered (the store already waits out
an outage; what reaches here is a refused password or the like, which an operator must
fix). With ``halt`` (the worker's), the agent then takes no later batch and the worker
stops: raised out of the agent, Faust's supervisor would restart the actor on the same
stream, which would take the next batch past the failed one, and its forwards would
reach the terminal agents ahead of the failed batch's, which a restart sends later and
the terminal agents then skip as already applied (the Redis refusal test saw terminal
states miss transactions that way, about one run in ten).

Processing a record again after its batch failed part-way is safe: state is written at
the end of a batch, after its outputs; a state written before the failure makes the
record a duplicate that the state recognises (the customer's transaction ids, the
terminal's replay marks and report ids), and outputs are at least once anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from streams.contracts import DecodeError, Problem
from streams.metrics import PipelineMetrics
from streams.pipeline.inputs import InputRecord
from streams.pipeline.outputs import Send, send_dead_letter

logger = logging.getLogger(__name__)

#: Errors of the worker's dependencies: raised on, never blamed on a record.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (RedisError, KafkaError, OSError)

#: How many links of an exception's ``__cause__`` chain are looked at for a dependency's.
CAUSE_DEPTH = 5

#: A stage's per-batch call.
Process = Callable[[Sequence[InputRecord]], Awaitable[None]]
#: Stops the worker on a dependency's failure; never returns (``streams.pipeline``).
Halt = Callable[[str, BaseException], Awaitable[None]]


def dependency_error(exc: BaseException) -> BaseException | None:
    """The dependency's error ``exc`` is, or was raised from; None for any other error.

    Faust wraps a producer's ``KafkaError`` in ``ProducerSendError`` (``raise ... from``),
    which is no ``KafkaError``: blamed on the records, a deleted alerts topic would have
    dead-lettered every transaction as ``internal_error`` instead of stopping the worker.
    """
    current: BaseException | None = exc
    for _ in range(CAUSE_DEPTH):
        if current is None:
            return None
        if isinstance(current, INFRASTRUCTURE_ERRORS):
            return current
        current = current.__cause__
    return None


class BatchGuard:
    """Runs a stage's micro-batches so that nothing raises out of the agent.

    Args:
        agent: The agent's name, for log lines.
        send: Queues a message on the producer.
        dlq: The dead-letter topic.
        metrics: The worker's metrics.
        halt: Called with the agent's name and a dependency's error instead of raising it;
            never returns. None: the error is raised.
    """

    def __init__(
        self,
        agent: str,
        send: Send,
        dlq: str,
        metrics: PipelineMetrics,
        halt: Halt | None = None,
    ) -> None:
        self.agent = agent
        self.send = send
        self.dlq = dlq
        self.metrics = metrics
        self.halt = halt

    async def run(self, process: Process, events: Sequence[InputRecord]) -> None:
        """Process a batch; on an exception, process its records one by one.

        A dependency's error halts the agent (see the module's docstring).
        """
        try:
            await self._run(process, events)
        except Exception as exc:
            if self.halt is None or dependency_error(exc) is None:
                raise
            await self.halt(self.agent, exc)

    async def _run(self, process: Process, events: Sequence[InputRecord]) -> None:
        try:
            await process(events)
        except Exception as exc:
            if dependency_error(exc) is not None:
                raise
            logger.exception(
                "agent %s failed on a batch of %d records; processing them one by one",
                self.agent,
                len(events),
            )
            for event in events:
                await self._one(process, event)

    async def _one(self, process: Process, event: InputRecord) -> None:
        try:
            await process([event])
        except Exception as exc:
            if dependency_error(exc) is not None:
                raise
            message = event.message
            problem = DecodeError(
                Problem.INTERNAL_ERROR,
                f"agent {self.agent} raised {type(exc).__name__}: {str(exc)[:300]}",
            )
            try:
                await send_dead_letter(self.send, self.dlq, event, problem, self.metrics)
            except Exception:
                logger.exception(
                    "agent %s skipped %s/%d/%d: it raised %r and its dead letter could not be sent",
                    self.agent,
                    message.topic,
                    message.partition,
                    message.offset,
                    exc,
                )
                self.metrics.records_failed.labels(outcome="skipped").inc()
                return
            logger.error(
                "agent %s dead-lettered %s/%d/%d as internal_error: %r",
                self.agent,
                message.topic,
                message.partition,
                message.offset,
                exc,
            )
            self.metrics.records_failed.labels(outcome="dead_lettered").inc()
