"""Backoff: one WARNING when an outage starts and one when it ends, none for a blip."""

from __future__ import annotations

import logging

import pytest
import redis

from streams.tablestore.backend import Backoff

REFUSED = redis.ConnectionError("Connection refused")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_an_outage_is_logged_when_it_starts_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backoff = Backoff("Redis at test", first_s=0.05, cap_s=0.2)
    waits = [backoff.failed(REFUSED) for _ in range(5)]
    assert waits == [0.05, 0.1, 0.2, 0.2, 0.2]
    assert backoff.in_outage
    backoff.succeeded()
    assert not backoff.in_outage
    logged = warnings(caplog)
    assert len(logged) == 2, logged
    assert logged[0] == "Redis at test unavailable (Connection refused); retrying with backoff"
    assert logged[1].startswith("Redis at test available again after ")
    assert backoff.outages_ended == 1
    assert backoff.failed(REFUSED) == 0.05  # the next outage backs off from the start


def test_a_failure_whose_retry_succeeds_is_no_outage_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pooled connection to a restarted Redis fails once, just after another call found
    Redis back: it used to be logged as a second outage of 0.0 s."""
    backoff = Backoff("Redis at test")
    backoff.failed(REFUSED)
    backoff.succeeded()
    backoff.failed(REFUSED)
    backoff.succeeded()
    assert warnings(caplog) == []
    # Still counted: whoever checks Redis after an outage checks after these too.
    assert backoff.outages_ended == 2
