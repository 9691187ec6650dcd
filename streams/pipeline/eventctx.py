"""Make one event of a micro-batch Faust's current event while writing its table state.

Faust tables route a write to the partition of the event being processed (and the
``redis://`` store records that event's offset as covered), reading it from a context
variable that ``Stream`` sets per event. Inside ``stream.take_events`` it holds the last
event buffered, not the one a batch is writing for, so the agents set it per write.
This touches ``faust.streams._current_event``: faust-streaming is pinned (0.15.3) and
the integration tests would fail on a change of it.
"""

from __future__ import annotations

import weakref
from contextvars import Token
from typing import Any

from faust.streams import _current_event
from faust.types import EventT


def set_current_event(event: EventT[Any]) -> Token[Any]:
    """Make ``event`` the current event; returns the token to `restore_current_event`."""
    return _current_event.set(weakref.ref(event))


def restore_current_event(token: Token[Any]) -> None:
    """Undo `set_current_event`."""
    _current_event.reset(token)
