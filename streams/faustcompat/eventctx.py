"""Make one event of a micro-batch Faust's current event while writing its table state.

Upstream: faust-streaming 0.15.3, ``faust/streams.py``: the context variable
``_current_event`` (a weak reference to the event being processed), which
``Stream._set_current_event`` sets per event and the public ``current_event()`` reads.
Faust tables route a write to the partition of the current event (and the ``redis://``
store records that event's offset as covered). Inside ``stream.take_events`` it holds
the last event buffered, not the one a batch is writing for, so the agents set it per
write; Faust has no public setter. ``tests/unit/faustcompat/test_eventctx_contract.py``
fails when the variable, or what ``current_event()`` reads, changes.
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
