"""`streams.delivery.DeliveryWatch`: every output's future read, the first refusal kept."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import MessageSizeTooLargeError, TopicAuthorizationFailedError

from streams.delivery import DeliveryWatch, Refusal


def watch_with_log() -> tuple[DeliveryWatch, list[Refusal], list[str]]:
    stops: list[Refusal] = []
    counted: list[str] = []
    return DeliveryWatch(stops.append, counted.append), stops, counted


async def test_delivered_outputs_leave_no_failure_and_are_let_go() -> None:
    watch, stops, counted = watch_with_log()
    loop = asyncio.get_running_loop()
    delivered, in_flight = loop.create_future(), loop.create_future()
    watch.watch("alerts", 0, delivered)
    watch.watch("alerts", 1, in_flight)
    delivered.set_result(object())
    assert watch.failure() is None
    assert watch.in_flight == 1  # the one still in flight is kept, the delivered one not
    in_flight.set_result(object())
    assert watch.failure() is None
    assert watch.in_flight == 0
    assert stops == []
    assert counted == []


async def test_the_first_refusal_stops_once_and_every_one_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch, stops, counted = watch_with_log()
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(5)]
    for i, future in enumerate(futures):
        watch.watch("alerts" if i < 3 else "scores", i, future)
    futures[0].set_result(object())
    futures[1].set_exception(MessageSizeTooLargeError())
    futures[2].set_exception(MessageSizeTooLargeError())
    futures[3].set_exception(TopicAuthorizationFailedError())
    with caplog.at_level(logging.ERROR, logger="streams.delivery"):
        failure = watch.failure()
        futures[4].set_exception(TopicAuthorizationFailedError())
        assert watch.failure() is failure  # the first refusal stays the one

    assert failure is not None
    assert (failure.topic, failure.partition) == ("alerts", 1)
    assert str(failure) == (
        "Kafka refused an output to alerts[1]: MessageSizeTooLargeError: "
        "[Error 10] MessageSizeTooLargeError"
    )
    assert stops == [failure]  # the stop is asked once
    assert counted == ["alerts", "alerts", "scores", "scores"]
    # One line per topic and error, however many records it refused.
    assert len(caplog.records) == 2, caplog.text


async def test_a_refused_future_read_is_not_logged_by_asyncio_as_never_retrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch, _, _ = watch_with_log()
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    watch.watch("alerts", 0, future)
    future.set_exception(MessageSizeTooLargeError())
    watch.failure()
    del future
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        import gc

        gc.collect()
    assert "never retrieved" not in caplog.text


async def test_a_cancelled_delivery_is_a_refusal() -> None:
    watch, stops, _ = watch_with_log()
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    watch.watch("scores", None, future)
    future.cancel()
    failure = watch.failure()
    assert failure is not None
    assert str(failure).startswith("Kafka refused an output to scores:")
    assert stops == [failure]


def test_a_send_that_returns_no_future_is_ignored() -> None:
    watch, stops, _ = watch_with_log()
    watch.watch("alerts", 0, None)
    assert watch.failure() is None
    assert stops == []
