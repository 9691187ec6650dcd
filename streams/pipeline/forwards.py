"""Forwards: the score agent's hand-off of valid transactions to the terminal agents.

The scorer is partitioned by customer, the terminal agents by terminal, so every valid
transaction crosses over through the internal ``transactions-by-terminal`` topic. One
message per transaction would double the worker's Kafka traffic: each message costs a
producer send and, on the other side, Faust's per-event ingest (about 100 us of CPU, the
whole budget of a pass-through agent). So the scorer sends one message per micro-batch
and terminal partition, holding every transaction of the batch bound for that partition,
with only what the terminal windows need.

Format (internal; orjson): ``{"v": 1, "rows": [row, ...], "wm": {"<source>": ms}, "tp":
[[index, traceparent], ...]}``, each row a list ``[source_partition, source_offset, tx_id,
customer_id, terminal_id, tx_time, amount]``; ``wm`` (optional) declares source
partitions' event-time watermarks, -1 for a source read to its end
(``streams.pipeline.watermarks``). A message may hold no rows: a scorer's watermark tick.
``tp`` (optional, only when a row has one) gives the trace context of rows by their index
in ``rows``: the ``traceparent`` header of the row's transaction as it came in (the
parent, not a child: the terminal agents make a child of it for what they send for the
row, a dead letter, just as the scorer does for the alert; ``streams.tracecontext``).
Only transactions with a valid version-00 ``traceparent`` have an entry; a trace that is
not one is ignored when read (never a reason to refuse the rows), but a ``tp`` that is not
a list of ``[index, string]`` pairs with indexes of the message's rows is refused like any
malformed message.

Versions: ``tp`` came without a new `FORWARD_VERSION` because every decoder reads only
``v``, ``rows`` and ``wm`` and ignores other keys, so workers of both kinds mix during a
rolling upgrade: an older terminal agent applies a newer scorer's rows as before (its dead
letters of them just carry no trace), and a newer one reads an older scorer's messages as
rows without traces. The trace is not an 8th row element because decoders before it
refuse a row that is not exactly 7 values, so they would dead-letter whole messages of a
newer scorer and their rows would be missing from the terminal states. A change older
decoders cannot read must raise `FORWARD_VERSION`: they then dead-letter every message of
the new format whole (``bad_schema_version``), so all workers must be upgraded together.
Rows are in source-offset order within each source partition, which replay marks rely
on (``streams.pipeline.terminals``): after a scorer's crash a replayed batch may be cut
differently, so a message can hold rows already applied and rows not; the source offset
of each row tells them apart. ``amount`` is the float the features use (``float`` of the
transaction's decimal amount; orjson writes the shortest repr, which reads back equal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

import orjson

from streams.contracts import DecodeError, Problem
from streams.tracecontext import TRACEPARENT, parent_of

#: Version of the forward message format.
FORWARD_VERSION: Final = 1

_ROW_TYPES: Final = (int, int, str, str, str, int, float)
_ROW_FIELDS: Final = (
    "source_partition",
    "source_offset",
    "tx_id",
    "customer_id",
    "terminal_id",
    "tx_time",
    "amount",
)


#: A row as the scorer builds it: a plain tuple, since orjson does not write NamedTuples.
Row = tuple[int, int, str, str, str, int, float]


class ForwardRow(NamedTuple):
    """One forwarded transaction, as the terminal agents apply it."""

    source_partition: int
    source_offset: int
    tx_id: str
    customer_id: str
    terminal_id: str
    tx_time: int
    amount: float


class ForwardMessage(NamedTuple):
    """A decoded forward message: its rows, the source watermarks it declares, the traces.

    ``traces`` maps the index of a row in ``rows`` to its transaction's ``traceparent``
    (a valid version-00 one, as `streams.tracecontext.parent_of` gives it); rows without
    one are not in it.
    """

    rows: list[ForwardRow]
    watermarks: dict[int, int]
    traces: dict[int, bytes]


def encode_forwards(
    rows: Sequence[Row],
    watermarks: Mapping[int, int] | None = None,
    traces: Sequence[tuple[int, str]] | None = None,
) -> bytes:
    """One forward message holding ``rows`` (in source-offset order per source partition).

    Args:
        rows: The transactions bound for one terminal partition.
        watermarks: Source partition -> declared watermark (`IDLE` -1), if any.
        traces: (index in ``rows``, the transaction's ``traceparent``) of the rows whose
            transaction had a valid one, if any.
    """
    if not watermarks and not traces:
        return orjson.dumps({"v": FORWARD_VERSION, "rows": rows})
    message: dict[str, object] = {"v": FORWARD_VERSION, "rows": rows}
    if watermarks:
        message["wm"] = {str(source): value for source, value in watermarks.items()}
    if traces:
        message["tp"] = traces
    return orjson.dumps(message)


def decode_forwards(raw: bytes | None) -> list[ForwardRow] | DecodeError:
    """The rows of a forward message, or why it is not one (`decode_forward_message`)."""
    message = decode_forward_message(raw)
    return message if isinstance(message, DecodeError) else message.rows


def decode_forward_message(raw: bytes | None) -> ForwardMessage | DecodeError:
    """A forward message's rows and watermarks, or why it is not one (it goes to the DLQ whole).

    The topic is internal, so a bad message means a bug or a stranger writing to it:
    the whole message is refused rather than guessing which rows are good.
    """
    if raw is None:
        return DecodeError(Problem.NOT_JSON, "a forward message has no value")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return DecodeError(Problem.NOT_JSON, f"a forward message is not JSON: {exc}")
    if not isinstance(message, dict):
        return DecodeError(Problem.NOT_AN_OBJECT, "a forward message must be a JSON object")
    version = message.get("v")
    if type(version) is not int or version != FORWARD_VERSION:
        return DecodeError(
            Problem.BAD_SCHEMA_VERSION,
            f"forward format {version!r:.40} is not {FORWARD_VERSION}",
            "v",
        )
    rows = message.get("rows")
    if rows is None:
        return DecodeError(Problem.MISSING_FIELD, "a forward message needs a list of rows", "rows")
    if not isinstance(rows, list):
        return DecodeError(Problem.WRONG_TYPE, "rows must be a list", "rows")
    out: list[ForwardRow] = []
    for i, row in enumerate(rows):
        if not (  # the scorer's rows, checked inline: _row_problem says what is wrong
            type(row) is list
            and len(row) == 7
            and type(row[0]) is int
            and type(row[1]) is int
            and type(row[2]) is str
            and type(row[3]) is str
            and type(row[4]) is str
            and type(row[5]) is int
            and type(row[6]) is float
            and row[0] >= 0
            and row[1] >= 0
        ):
            problem = _row_problem(row, i)
            if problem is not None:
                return problem
            row[6] = float(row[6])  # an int amount: orjson reads 12.0 as a float, 12 not
        out.append(ForwardRow(*row))
    declared = message.get("wm")
    watermarks = {} if declared is None else _watermarks(declared)
    if isinstance(watermarks, DecodeError):
        return watermarks
    traced = message.get("tp")
    traces = {} if traced is None else _traces(traced, len(out))
    if isinstance(traces, DecodeError):
        return traces
    return ForwardMessage(out, watermarks, traces)


def _watermarks(declared: object) -> dict[int, int] | DecodeError:
    """The ``wm`` object: decimal source partitions to watermarks (ms, or -1: idle)."""
    if not isinstance(declared, dict):
        return DecodeError(Problem.WRONG_TYPE, "wm must be an object", "wm")
    out: dict[int, int] = {}
    for source, value in declared.items():
        if not (source.isascii() and source.isdigit() and len(source) <= 9):
            return DecodeError(Problem.BAD_VALUE, f"wm key {source!r:.40} is not a partition", "wm")
        if type(value) is not int or value < -1:
            return DecodeError(
                Problem.WRONG_TYPE, f"wm of partition {source} must be an int >= -1", "wm"
            )
        out[int(source)] = value
    return out


def _traces(traced: object, rows: int) -> dict[int, bytes] | DecodeError:
    """The ``tp`` list: [row index, traceparent] pairs; traces that are not valid are left out."""
    if not isinstance(traced, list):
        return DecodeError(Problem.WRONG_TYPE, "tp must be a list", "tp")
    out: dict[int, bytes] = {}
    for i, entry in enumerate(traced):
        if not (
            type(entry) is list
            and len(entry) == 2
            and type(entry[0]) is int
            and type(entry[1]) is str
        ):
            return DecodeError(
                Problem.WRONG_TYPE, f"tp entry {i} must be a [row index, traceparent] pair", "tp"
            )
        index, value = entry
        if not 0 <= index < rows:
            return DecodeError(
                Problem.BAD_VALUE, f"tp entry {i} names row {index}, not one of the rows", "tp"
            )
        if value.isascii():
            parent = parent_of(((TRACEPARENT, value.encode()),))
            if parent is not None:
                out[index] = parent
    return out


def _row_problem(row: object, index: int) -> DecodeError | None:
    if not isinstance(row, list) or len(row) != len(_ROW_TYPES):
        return DecodeError(
            Problem.WRONG_TYPE,
            f"row {index} must be a list of {len(_ROW_TYPES)} values: {', '.join(_ROW_FIELDS)}",
            f"rows[{index}]",
        )
    for value, kind, name in zip(row, _ROW_TYPES, _ROW_FIELDS, strict=True):
        if type(value) is kind or (kind is float and type(value) is int):
            continue
        return DecodeError(
            Problem.WRONG_TYPE,
            f"{name} of row {index} must be {kind.__name__}, not {type(value).__name__}",
            f"rows[{index}].{name}",
        )
    if row[0] < 0 or row[1] < 0:
        return DecodeError(
            Problem.BAD_VALUE, f"row {index} has a negative source position", f"rows[{index}]"
        )
    return None


def row_value(row: ForwardRow) -> bytes:
    """One row as a JSON object: the dead-letter value of a row the terminals refuse."""
    return orjson.dumps(row._asdict())
