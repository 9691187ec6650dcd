"""Pacing: which events are due when, for each pace."""

from __future__ import annotations

import pytest

from streams.replay.pacing import Pace, Pacer, Pacing


def test_the_default_is_as_fast_as_possible() -> None:
    pacing = Pacing.from_options(speed=None, rate=None, as_fast_as_possible=False)
    assert pacing == Pacing(Pace.MAX)
    pacer = Pacer(pacing)
    assert pacer.due(0.0, [1, 2, 10**12], sent=0) == 3
    assert pacer.wait(0.0, 10**12, sent=3) == 0.0


def test_speed_maps_event_time_to_wall_time() -> None:
    pacer = Pacer(Pacing(Pace.SPEED, 60.0))  # a minute of event time per second
    times = [0, 30_000, 60_000, 60_000, 120_000]
    assert pacer.due(100.0, times, sent=0) == 1  # anchored: the first is due at once
    assert pacer.due(100.4, times, sent=0) == 1
    assert pacer.due(100.5, times, sent=0) == 2
    assert pacer.due(101.0, times, sent=0) == 4  # equal times go together
    assert pacer.wait(101.0, 120_000, sent=4) == pytest.approx(1.0)
    assert pacer.due(105.0, times[4:], sent=4) == 1  # late: everything overdue at once


def test_rate_spaces_events_evenly_whatever_their_times() -> None:
    pacer = Pacer(Pacing(Pace.RATE, 10.0))
    times = [0, 0, 10**9, 10**9 + 1]
    assert pacer.due(5.0, times, sent=0) == 1
    assert pacer.wait(5.0, 0, sent=1) == pytest.approx(0.1)
    assert pacer.due(5.15, times[1:], sent=1) == 1
    assert pacer.due(5.35, times[2:], sent=2) == 2
    assert pacer.due(5.35, [], sent=4) == 0


def test_a_clock_before_the_start_sends_only_the_first() -> None:
    pacer = Pacer(Pacing(Pace.RATE, 1.0))
    assert pacer.due(10.0, [1, 2], sent=0) == 1
    assert pacer.due(9.0, [2], sent=1) == 0


@pytest.mark.parametrize(
    ("speed", "rate", "fastest", "message"),
    [
        (2.0, 5.0, False, "choose one of --speed, --rate and --max, not --speed and --rate"),
        (2.0, None, True, "not --speed and --max"),
        (0.0, None, False, "speed must be a positive number, got 0.0"),
        (None, -1.0, False, "rate must be a positive number"),
        (float("inf"), None, False, "speed must be a positive number"),
    ],
)
def test_bad_pace_options(
    speed: float | None, rate: float | None, fastest: bool, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Pacing.from_options(speed=speed, rate=rate, as_fast_as_possible=fastest)


def test_paces_describe_themselves() -> None:
    assert Pacing().describe() == "as fast as possible"
    assert Pacing(Pace.SPEED, 3600).describe() == "3600 s of event time per second"
    assert Pacing(Pace.RATE, 500).describe() == "500 events/s"
