"""``fraudstream alerts``: print the alerts topic, as a table or as JSON lines.

A thin shell over ``streams.alertfeed`` (no consumer group: nobody's offsets move). Each
message is decoded by ``streams.contracts.decode_alert``; a malformed one is skipped with
one warning on stderr and counted. JSON output passes the original bytes through, one
object per line, flushed per line so that ``| jq`` sees each alert at once.

Where it starts: ``--from-beginning``, ``--since TIME`` or, by default, the last alerts
(``--last N``, 20 unless following): N per partition are read, then the N most recent of
them by Kafka timestamp are printed, so on the whole topic it is exactly the last N as
long as every partition's timestamps grow. ``--follow`` without any of these prints only
alerts sent from now on; with ``--last N`` it prints the last N first, like ``tail -f``.

Exit status: 0 done (caught up, ``--limit`` reached, or a ``--follow`` ended by Ctrl-C or
SIGTERM, which is its normal end); 1 Kafka unavailable or the topic missing; 2 bad
options; 130 interrupted before catching up without ``--follow`` (the output is partial).
A reader that goes away (``| head``) ends the command quietly, with 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Final, NoReturn, Protocol

import typer
from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.table import Table

from streams.settings import Settings

if TYPE_CHECKING:
    from streams.alertfeed import AlertFeed, FeedMessage, StartAt
    from streams.records import Alert

EXIT_KAFKA: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

#: ``--last`` without ``--follow``, when no start option is given.
DEFAULT_LAST: Final = 20
#: Reasons shown in the table; the JSON has them all.
TABLE_REASONS: Final = 3

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT_MS: Final = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION: Final = re.compile(r"(?:\d+[smhdw])+")


@dataclass(frozen=True, slots=True)
class TableColumn:
    """One column of the table output.

    Attributes:
        title: The header.
        width: Fixed width in characters; None for the one column that takes the rest.
        right: Right-aligned (numbers).
    """

    title: str
    width: int | None
    right: bool = False


#: The table's columns, in the order of ``alert_row``'s cells. Fixed widths (long ids are
#: cut with an ellipsis) keep the rows aligned although each row is printed on its own.
TABLE_COLUMNS: Final = (
    TableColumn("time (UTC)", 19),
    TableColumn("alert", 8),
    TableColumn("customer", 12),
    TableColumn("terminal", 12),
    TableColumn("amount", 14, right=True),
    TableColumn("score", 5, right=True),
    TableColumn("thr", 5, right=True),
    TableColumn("model", 10),
    TableColumn("top reasons", None),
    TableColumn("latency_ms", 10, right=True),
)
#: The narrowest the reasons column gets before other columns are dropped.
MIN_REASONS_WIDTH: Final = 20
#: Spaces between two columns.
COLUMN_GAP: Final = 2
#: On a narrow terminal, columns are dropped in this order until the table fits.
DROP_ORDER: Final = ("thr", "terminal", "model", "alert", "latency_ms")


class Output(StrEnum):
    """Output formats."""

    TABLE = "table"
    JSON = "json"


def alerts(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new alerts (Ctrl-C stops).")
    ] = False,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest alert kept.")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="Start at alerts sent at or after this time: ISO-8601 (2026-11-26T10:00, "
            "UTC unless it says otherwise) or a duration ago (90s, 15m, 2h, 1d, 1h30m)."
        ),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option(
            min=0,
            help=f"Show the last N alerts first (default {DEFAULT_LAST}, or 0 with --follow).",
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Only alerts scored at least this."),
    ] = None,
    output: Annotated[
        Output, typer.Option(help="table, or json: one alert per line as on the wire.")
    ] = Output.TABLE,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Stop after printing this many alerts.")
    ] = None,
) -> None:
    """Print the alerts the workers raised (topic ``alerts``), as a table or JSON lines.

    Reads without a consumer group, so no one's offsets move. Without --follow it stops
    once it has read what the topic held when it started.
    """
    settings: Settings = ctx.obj
    from streams.alertfeed import TopicMissingError
    from streams.kafka import BrokerUnavailableError

    try:
        since_ms = None if since is None else parse_since(since, _now_ms())
        start = choose_start(
            follow=follow, from_beginning=from_beginning, since_ms=since_ms, last=last
        )
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    printer: Printer = _JsonPrinter() if output is Output.JSON else _TablePrinter()
    reading = Reading(follow=follow, min_score=min_score, limit=limit, printer=printer)
    try:
        asyncio.run(reading.run(settings, start))
    except (KeyboardInterrupt, asyncio.CancelledError):  # before the handlers, or twice
        reading.interrupted = True
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. Keep Python's exit-time flush of
        # stdout from failing on the closed pipe too.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    except BrokerUnavailableError as exc:
        _fail(str(exc), EXIT_KAFKA)
    except TopicMissingError as exc:
        _fail(f"{exc} (workers create it; is the topic prefix right?)", EXIT_KAFKA)
    except Exception as exc:
        from aiokafka.errors import KafkaError

        if isinstance(exc, KafkaError):
            _fail(f"Kafka error: {exc!r}", EXIT_KAFKA)
        raise
    if reading.skipped:
        s = "" if reading.skipped == 1 else "s"
        typer.echo(f"fraudstream alerts: skipped {reading.skipped} malformed message{s}", err=True)
    if reading.interrupted and not follow and not reading.caught_up:
        raise typer.Exit(EXIT_INTERRUPTED)


# --- pure helpers ------------------------------------------------------------------------


def parse_since(text: str, now_ms: int) -> int:
    """Return the epoch milliseconds that ``--since`` means.

    Args:
        text: An ISO-8601 date or date-time (UTC unless it carries an offset), or a
            duration before now: digits and a unit ``s m h d w``, repeatable (``1h30m``).
        now_ms: The current time, epoch milliseconds (a parameter, so tests need no clock).

    Returns:
        The time, epoch milliseconds.

    Raises:
        ValueError: The text is neither, or the time is before 1970.
    """
    compact = text.strip().lower()
    if _DURATION.fullmatch(compact):
        ago = sum(
            int(amount) * _UNIT_MS[unit] for amount, unit in re.findall(r"(\d+)([smhdw])", compact)
        )
        moment_ms = now_ms - ago
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"--since must be an ISO-8601 time (2026-11-26T10:00) or a duration "
                f"(15m, 2h, 1d), got {text!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment_ms = (moment - _EPOCH) // timedelta(milliseconds=1)
    if moment_ms < 0:
        raise ValueError(f"--since {text} is before 1970")
    return moment_ms


def choose_start(
    *, follow: bool, from_beginning: bool, since_ms: int | None, last: int | None
) -> StartAt:
    """Turn the start options into a start position.

    Raises:
        ValueError: More than one of --from-beginning, --since and --last.
    """
    from streams.alertfeed import StartAt

    given = [
        name
        for name, value in (
            ("--from-beginning", from_beginning or None),
            ("--since", since_ms),
            ("--last", last),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"use only one of {', '.join(given)}")
    if from_beginning:
        return StartAt.beginning()
    if since_ms is not None:
        return StartAt.time(since_ms)
    count = last if last is not None else (0 if follow else DEFAULT_LAST)
    return StartAt.last(count) if count else StartAt.end()


def most_recent(
    items: Iterable[tuple[FeedMessage, Alert]], count: int
) -> list[tuple[FeedMessage, Alert]]:
    """The ``count`` most recent alerts by Kafka timestamp, oldest first.

    Ties are broken by partition and offset, so the order is the same on every run.
    """
    ordered = sorted(
        items, key=lambda item: (item[0].timestamp_ms, item[0].partition, item[0].offset)
    )
    return ordered[-count:] if count else []


def format_time(epoch_ms: int) -> str:
    """``2026-11-26 10:00:03``: UTC, to the second, sortable."""
    return (_EPOCH + timedelta(milliseconds=epoch_ms)).strftime("%Y-%m-%d %H:%M:%S")


def format_value(value: float) -> str:
    """A feature value short enough for a table cell (4 significant digits)."""
    return f"{value:.4g}"


def table_columns(width: int) -> list[int]:
    """The indices of the ``TABLE_COLUMNS`` shown on a console ``width`` characters wide.

    All of them when they fit (the reasons at least ``MIN_REASONS_WIDTH`` wide), else
    fewer, dropped in ``DROP_ORDER``: time, customer, amount, score and the reasons stay.
    """
    shown = list(range(len(TABLE_COLUMNS)))

    def needed() -> int:
        widths = [TABLE_COLUMNS[i].width or MIN_REASONS_WIDTH for i in shown]
        return sum(widths) + COLUMN_GAP * (len(widths) - 1)

    for title in DROP_ORDER:
        if needed() <= width:
            break
        shown = [i for i in shown if TABLE_COLUMNS[i].title != title]
    return shown


def alert_row(alert: Alert, timestamp_ms: int) -> list[str]:
    """The table cells of one alert, in the order of ``TABLE_COLUMNS``.

    Args:
        alert: The decoded alert.
        timestamp_ms: Its Kafka timestamp: when the worker sent it.
    """
    reasons = ", ".join(
        f"{reason.feature}={format_value(reason.value)}" for reason in alert.reasons[:TABLE_REASONS]
    )
    return [
        format_time(timestamp_ms),
        alert.alert_id[:8],
        alert.customer_id,
        alert.terminal_id,
        f"{alert.amount} {alert.currency}",
        f"{alert.score:.3f}",
        f"{alert.threshold:.3f}",
        alert.model_version,
        reasons or "-",
        str(alert.latency_ms),
    ]


def json_line(raw: bytes) -> bytes:
    """One JSON line for a valid alert's wire bytes: the bytes themselves when possible.

    A producer may pretty-print its JSON; a line break inside would break a JSON-lines
    reader, so such a value is re-serialised compactly (same fields, same values).
    """
    line = raw.strip()
    if b"\n" in line or b"\r" in line:
        line = json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=False).encode()
    return line


# --- reading and printing ----------------------------------------------------------------


class Printer(Protocol):
    """Prints alerts one at a time, as they come."""

    def start(self) -> None:
        """Called once the topic is open, before any alert (a table prints its header)."""

    def __call__(self, message: FeedMessage, alert: Alert) -> None:
        """Print one alert."""


class _JsonPrinter:
    def start(self) -> None:
        pass

    def __call__(self, message: FeedMessage, alert: Alert) -> None:
        assert message.value is not None  # it decoded
        typer.echo(json_line(message.value))  # bytes: written and flushed as they are


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Let the command end quietly with 0, as for JSON output (rich would exit 1)."""
        self.quiet = True
        raise BrokenPipeError


class _TablePrinter:
    """A header once, then one table row per alert, all with the same column widths."""

    def __init__(self, console: Console | None = None) -> None:
        if console is None:
            console = _Console()
            if not console.is_terminal:
                # A file or a pipe: no width to fit, keep the reasons readable.
                console = _Console(width=160)
        self._console = console
        self._columns = table_columns(self._console.width)
        self._header_shown = False

    def _table(self, *, header: bool) -> Table:
        table = Table(
            # The same box for the header and the rows: its dividers take width too.
            box=SIMPLE_HEAD,
            show_header=header,
            show_edge=False,
            expand=True,
            pad_edge=False,
            padding=(0, 1),
            collapse_padding=True,
        )
        for index in self._columns:
            column = TABLE_COLUMNS[index]
            table.add_column(
                column.title,
                width=column.width,
                ratio=None if column.width else 1,
                min_width=None if column.width else MIN_REASONS_WIDTH,
                justify="right" if column.right else "left",
                no_wrap=True,
                overflow="ellipsis",
            )
        return table

    def start(self) -> None:
        """Print the column titles (once)."""
        if not self._header_shown:
            self._header_shown = True
            self._console.print(self._table(header=True))

    def __call__(self, message: FeedMessage, alert: Alert) -> None:
        self.start()
        cells = alert_row(alert, message.timestamp_ms)
        table = self._table(header=False)
        table.add_row(*(cells[i] for i in self._columns))
        self._console.print(table)


@dataclass
class Reading:
    """One run of the command: its options, and what happened.

    Attributes:
        follow: Keep waiting after catching up.
        min_score: Skip alerts scored below this.
        limit: Stop after printing this many.
        printer: Where alerts go.
        shown: Alerts printed.
        skipped: Malformed messages skipped.
        caught_up: The backlog was read to the end.
        interrupted: Stopped by Ctrl-C or SIGTERM.
    """

    follow: bool
    min_score: float | None
    limit: int | None
    printer: Printer
    shown: int = 0
    skipped: int = 0
    caught_up: bool = False
    interrupted: bool = False
    _backlog: list[tuple[FeedMessage, Alert]] = field(default_factory=list, init=False, repr=False)

    async def run(self, settings: Settings, start: StartAt) -> None:
        """Read, decode, filter and print until caught up, the limit, or a signal."""
        from streams.alertfeed import AlertFeed

        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, task.cancel)
        # aiokafka's INFO lines (partition assignment) would interleave with the alerts
        # on a terminal; warnings stay, and --log-level debug shows everything.
        kafka_log = logging.getLogger("aiokafka")
        kafka_level = kafka_log.level
        if kafka_log.getEffectiveLevel() == logging.INFO:
            kafka_log.setLevel(logging.WARNING)
        try:
            async with AlertFeed(settings, start, follow=self.follow) as feed:
                self.printer.start()
                await self._consume(feed, start)
        except asyncio.CancelledError:
            if task.uncancel() > 0:
                raise
            self.interrupted = True
        finally:
            kafka_log.setLevel(kafka_level)
            for signum in signals:
                loop.remove_signal_handler(signum)

    async def _consume(self, feed: AlertFeed, start: StartAt) -> None:
        from streams.alertfeed import CaughtUp
        from streams.contracts import DecodeError, decode_alert

        # The last N come from every partition: sort them by time before printing.
        keep = start.value if start.kind == "last" else None
        async with contextlib.aclosing(feed.items()) as items:
            async for item in items:
                if isinstance(item, CaughtUp):
                    self.caught_up = True
                    if keep is not None:
                        backlog, self._backlog = most_recent(self._backlog, keep), []
                        keep = None
                        if self._print_all(backlog):
                            return
                    continue
                alert = decode_alert(item.value)
                if isinstance(alert, DecodeError):
                    self.skipped += 1
                    typer.echo(
                        f"fraudstream alerts: skipped a malformed message "
                        f"(partition {item.partition}, offset {item.offset}): {alert}",
                        err=True,
                    )
                    continue
                if self.min_score is not None and alert.score < self.min_score:
                    continue
                if keep is not None:
                    self._backlog.append((item, alert))
                elif self._print_all([(item, alert)]):
                    return

    def _print_all(self, alerts: Sequence[tuple[FeedMessage, Alert]]) -> bool:
        """Print alerts up to the limit; return whether the limit is reached."""
        for message, alert in alerts:
            if self.limit is not None and self.shown >= self.limit:
                return True
            self.printer(message, alert)
            self.shown += 1
        return self.limit is not None and self.shown >= self.limit


def _now_ms() -> int:
    return (datetime.now(UTC) - _EPOCH) // timedelta(milliseconds=1)


def _fail(message: str, code: int) -> NoReturn:
    """Print one line to stderr and exit with ``code``, without a traceback."""
    typer.echo(f"fraudstream alerts: {message}", err=True)
    raise typer.Exit(code)
