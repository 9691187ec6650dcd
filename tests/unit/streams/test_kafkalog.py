"""streams.kafkalog: one warning when an outage starts, one when it ends, a count between."""

from __future__ import annotations

import asyncio
import inspect
import logging

import aiokafka
import pytest
from aiokafka.errors import KafkaConnectionError, NotLeaderForPartitionError, RequestTimedOutError
from prometheus_client import CollectorRegistry, Counter

import streams.kafka  # noqa: F401 - installs the filter, as every Kafka client's import does
from streams.kafkalog import (
    BOOTSTRAP_MESSAGES,
    CONNECTION_ERROR_MESSAGES,
    OUTAGE_LOG,
    OutageLog,
)
from streams.metrics import PipelineMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counter() -> Counter:
    return Counter("errors", "test", registry=CollectorRegistry())


@pytest.fixture
def outage(clock: Clock, counter: Counter) -> OutageLog:
    return OutageLog(quiet_s=5.0, clock=clock, counter=counter)


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def _connect_error() -> logging.LogRecord:
    error = KafkaConnectionError("Connect call failed ('127.0.0.1', 9092)")
    return _record("aiokafka", "Unable connect to node with id %s: %s", 1, error)


def test_every_message_is_in_the_pinned_aiokafka_source() -> None:
    source = "\n".join(
        inspect.getsource(module)
        for module in (
            aiokafka.client,
            aiokafka.producer.sender,
            aiokafka.consumer.fetcher,
            aiokafka.consumer.group_coordinator,
        )
    )
    for message in [
        *BOOTSTRAP_MESSAGES,
        *(m for ms in CONNECTION_ERROR_MESSAGES.values() for m in ms),
    ]:
        assert message in source, message


def test_the_first_error_is_a_warning_the_rest_counted(
    outage: OutageLog, clock: Clock, counter: Counter
) -> None:
    first = _connect_error()
    assert outage.filter(first)
    assert first.levelno == logging.WARNING
    assert first.getMessage().startswith(
        "Kafka unreachable (Unable connect to node with id 1: KafkaConnectionError: Connect"
    )
    for _ in range(115):
        clock.now += 0.01
        assert not outage.filter(_connect_error())
        assert not outage.filter(
            _record(
                "aiokafka.consumer.fetcher",
                "Failed fetch messages from %s: %s",
                1,
                RequestTimedOutError(),
            )
        )
    assert counter._value.get() == 231
    assert outage.in_outage


def test_other_lines_pass_untouched(outage: OutageLog) -> None:
    outage.filter(_connect_error())
    other = _record("aiokafka", "Topic %s not found in cluster metadata", "t")
    assert outage.filter(other)
    assert other.levelno == logging.ERROR
    # The same text on another logger is not ours either.
    assert outage.filter(_record("faust", "Unable connect to node with id %s: %s", 1, "x"))


def test_the_end_is_logged_once_after_a_quiet_period(
    clock: Clock, counter: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    outage = OutageLog(quiet_s=0.05, clock=clock, counter=counter)

    async def an_outage() -> None:
        outage.filter(_connect_error())
        for _ in range(20):
            clock.now += 0.01
            outage.filter(_connect_error())
        clock.now += 1.0
        await asyncio.sleep(0.2)  # the loop's timer finds the quiet period

    with caplog.at_level(logging.WARNING, logger="streams.kafkalog"):
        asyncio.run(an_outage())
    ends = [r.getMessage() for r in caplog.records if r.name == "streams.kafkalog"]
    assert ends == ["Kafka connection errors stopped: 21 in 0.2 s, none for the last 1 s"]
    assert not outage.in_outage


def test_without_a_loop_the_end_is_told_at_the_next_outage(
    outage: OutageLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    outage.filter(_connect_error())
    clock.now += 1
    assert not outage.filter(_connect_error())
    assert outage.in_outage
    clock.now += 60
    # No timer said it ended, but a quiet minute is no outage to the gauge and /ready.
    assert not outage.in_outage
    assert outage.down_since is None
    with caplog.at_level(logging.WARNING, logger="streams.kafkalog"):
        again = _connect_error()
        assert outage.filter(again)  # a new outage: its first line shows
    assert again.levelno == logging.WARNING
    assert [r.getMessage() for r in caplog.records] == [
        "Kafka connection errors stopped: 2 in 1.0 s, none for the last 60 s"
    ]


def test_bootstrap_lines_are_left_to_bootstrap_failures(
    outage: OutageLog, counter: Counter
) -> None:
    line = 'Unable connect to "%s:%s": %s'
    assert outage.filter(_record("aiokafka", line, "127.0.0.1", 9092, "refused"))
    assert counter._value.get() == 0  # no outage: the CLI's start failure, not counted
    outage.filter(_connect_error())
    assert outage.filter(_record("aiokafka", line, "127.0.0.1", 9092, "refused"))
    assert counter._value.get() == 2


def test_installed_at_import_on_each_logger_and_exported_by_workers() -> None:
    for name in CONNECTION_ERROR_MESSAGES:
        assert logging.getLogger(name).filters.count(OUTAGE_LOG) == 1
    body = PipelineMetrics().render()[0].decode()
    assert "\nfraudstream_kafka_connection_errors_total " in body


def test_a_brokers_answer_is_not_an_outage(outage: OutageLog, counter: Counter) -> None:
    line = _record(
        "aiokafka.consumer.fetcher",
        "Failed fetch offsets from %s: %s",
        1,
        NotLeaderForPartitionError(),
    )
    assert outage.filter(line)
    assert line.levelno == logging.ERROR
    assert not outage.in_outage
    assert counter._value.get() == 0
