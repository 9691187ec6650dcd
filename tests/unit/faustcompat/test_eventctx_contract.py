"""Faust's current-event variable, which streams.faustcompat.eventctx sets per table write."""

from __future__ import annotations

import contextvars
from typing import Any, cast

import faust.streams
from faust.streams import current_event
from upstream import upstream_source

from streams.faustcompat.eventctx import restore_current_event, set_current_event


def test_the_variable_is_a_context_variable_read_by_current_event() -> None:
    assert isinstance(faust.streams._current_event, contextvars.ContextVar)
    reader = upstream_source(faust.streams, "current_event")
    assert "eventref = _current_event.get(None)" in reader
    assert "return eventref() if eventref is not None else None" in reader
    # Faust's streams set it the same way: a weak reference to the event.
    setter = upstream_source(faust.streams, "Stream._set_current_event")
    assert "_current_event.set(weakref.ref(event))" in setter


class Event:
    """Stands in for a Faust event (weak references are taken to it)."""


def test_an_event_set_is_current_until_restored() -> None:
    event = cast(Any, Event())
    before = current_event()
    token = set_current_event(event)
    try:
        assert current_event() is event
    finally:
        restore_current_event(token)
    assert current_event() is before
