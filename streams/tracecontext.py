"""W3C trace context (``traceparent``) from a transaction onto what the worker sends for it.

A producer that traces its payments puts a ``traceparent`` header on each transaction
(https://www.w3.org/TR/trace-context/: ``00-<32 hex trace id>-<16 hex parent id>-<2 hex
flags>``). The worker carries the trace onto the alert and the score record of that
transaction as a child: same trace id and flags, a new parent id (the worker's hop), so
a tracing backend links the payment to its alert. A transaction without a valid header
starts a new trace, sampled off. Dead letters keep the input's own headers unchanged
(``streams.pipeline.outputs``). A transaction's forward row to the terminal agents
carries its valid header as it came (``streams.pipeline.forwards``), and a terminal
agent's dead letter of that row carries a child of it; a row without one has no trace
and its dead letter makes none up.

A child (8 random bytes) is made per alert and per score record only, never for
transactions that send nothing. The header scan for the forward row is only made for a
transaction that has headers at all: one truth test for those that have none.
"""

from __future__ import annotations

import os
import re
from typing import Any, Final

#: The header name, as W3C trace context says (lower case).
TRACEPARENT: Final = "traceparent"
_FORMAT: Final = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16


def parent_of(headers: Any) -> bytes | None:
    """The input's ``traceparent`` value if it is a valid version-00 one, else None.

    Args:
        headers: A record's headers as clients give them: (name, value) pairs, or a
            mapping (Faust's), or None; values may be null.
    """
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for name, value in items:
        if name == TRACEPARENT:
            if value is None:
                return None
            match = _FORMAT.fullmatch(value)
            if match is None or match[1] == _ZERO_TRACE or match[2] == _ZERO_SPAN:
                return None
            return bytes(value)
    return None


def child_of(parent: bytes | None) -> bytes:
    """A ``traceparent`` for what the worker sends: a child of ``parent``, or a new trace."""
    span = os.urandom(8).hex().encode()
    if parent is None:
        return b"00-" + os.urandom(16).hex().encode() + b"-" + span + b"-00"
    return parent[:36] + span + parent[52:]
