"""When replayed events may be sent: pure arithmetic on wall-clock and event times.

Three paces:

- ``max`` (the default): as fast as the producer and broker go. Features are computed
  in event time, so a replay at any pace gives the same features and scores; the usual
  job (back-fill a dataset, benchmark the workers) wants it over as soon as possible.
- ``speed`` X: X seconds of event time per wall-clock second (1 is real time, 3600 one
  hour per second), keeping the dataset's own gaps and bursts: the pace to watch alerts
  arrive as they would have.
- ``rate`` N: N events per second, evenly, whatever their event times: the pace to load a
  worker at a known rate (latency under load).

The schedule is anchored at the first event: with ``speed``, event time t is due at
``start + (t - first) / speed``; with ``rate``, the i-th event (from 0) at
``start + i / rate``. A sender that falls behind (a slow broker) catches up by sending
what is overdue at once, so event time keeps its relation to wall time on average.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Pace(StrEnum):
    """How fast a replay goes."""

    MAX = "max"
    SPEED = "speed"
    RATE = "rate"


@dataclass(frozen=True, slots=True)
class Pacing:
    """A pace and its parameter.

    Attributes:
        pace: Which pace.
        value: Event seconds per wall second (``SPEED``) or events per second
            (``RATE``); None for ``MAX``.
    """

    pace: Pace = Pace.MAX
    value: float | None = None

    def __post_init__(self) -> None:
        if self.pace is Pace.MAX:
            if self.value is not None:
                raise ValueError("max pace takes no value")
        elif self.value is None or not math.isfinite(self.value) or self.value <= 0:
            raise ValueError(f"{self.pace.value} must be a positive number, got {self.value}")

    @classmethod
    def from_options(
        cls, *, speed: float | None, rate: float | None, as_fast_as_possible: bool
    ) -> Pacing:
        """The pacing the command-line options ask for (at most one of them).

        Raises:
            ValueError: More than one pace is given, or a value is not positive.
        """
        chosen = [
            name
            for name, given in (
                ("--speed", speed is not None),
                ("--rate", rate is not None),
                ("--max", as_fast_as_possible),
            )
            if given
        ]
        if len(chosen) > 1:
            raise ValueError(f"choose one of --speed, --rate and --max, not {' and '.join(chosen)}")
        if speed is not None:
            return cls(Pace.SPEED, speed)
        if rate is not None:
            return cls(Pace.RATE, rate)
        return cls()

    def describe(self) -> str:
        """The pace in words, for summaries."""
        if self.pace is Pace.SPEED:
            return f"{self.value:g} s of event time per second"
        if self.pace is Pace.RATE:
            return f"{self.value:g} events/s"
        return "as fast as possible"


class Pacer:
    """The schedule of one replay: which events are due at a given wall-clock time.

    Args:
        pacing: The pace.
    """

    def __init__(self, pacing: Pacing) -> None:
        self.pacing = pacing
        self._start_s: float | None = None
        self._first_ms = 0

    def _anchor(self, now_s: float, first_ms: int) -> float:
        if self._start_s is None:
            self._start_s = now_s
            self._first_ms = first_ms
        return self._start_s

    def due(self, now_s: float, times_ms: Sequence[int], sent: int) -> int:
        """How many of the next events are due now.

        Args:
            now_s: The wall clock, in seconds (any monotonic origin).
            times_ms: Event times of the next events, in send order (non-decreasing).
            sent: Events sent before these.

        Returns:
            The number of leading events of ``times_ms`` to send now (0 to all).
        """
        if not times_ms:
            return 0
        start = self._anchor(now_s, times_ms[0])
        elapsed = max(0.0, now_s - start)
        if self.pacing.pace is Pace.SPEED:
            assert self.pacing.value is not None
            horizon = self._first_ms + elapsed * self.pacing.value * 1000
            return bisect_right(times_ms, horizon)
        if self.pacing.pace is Pace.RATE:
            assert self.pacing.value is not None
            allowed = math.floor(elapsed * self.pacing.value) + 1  # event 0 at once
            return max(0, min(len(times_ms), allowed - sent))
        return len(times_ms)

    def wait(self, now_s: float, next_ms: int, sent: int) -> float:
        """Seconds from now until the next event is due (0 when it is due already).

        Args:
            now_s: The wall clock, in seconds.
            next_ms: Event time of the next event.
            sent: Events sent before it.
        """
        start = self._anchor(now_s, next_ms)
        if self.pacing.pace is Pace.SPEED:
            assert self.pacing.value is not None
            due_s = start + (next_ms - self._first_ms) / 1000 / self.pacing.value
        elif self.pacing.pace is Pace.RATE:
            assert self.pacing.value is not None
            due_s = start + sent / self.pacing.value
        else:
            return 0.0
        return max(0.0, due_s - now_s)
