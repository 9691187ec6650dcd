"""``fraudstream replay``: send a transaction dataset to Kafka, fraud reports included.

A thin shell over ``streams.replay``: it reads the options, opens the file (schema only),
checks every row and counts the events (``--check``, the default: nothing is sent from a
file with a bad row), declares the topics and checks that they keep old events, then
sends at the chosen pace with a progress bar on a terminal, and prints a summary.

Exit status: 0 done; 1 Kafka unavailable or failing; 2 bad options or a bad dataset
(one line on stderr, never a traceback); 130 interrupted (Ctrl-C or SIGTERM), after
delivering what was already handed to the producer and saying how far it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from streams.settings import Settings

if TYPE_CHECKING:
    import polars as pl
    from rich.progress import Progress

    from streams.replay.events import StreamStats
    from streams.replay.pacing import Pacer, Pacing
    from streams.replay.reader import Dataset, Window
    from streams.replay.sender import ReplayResult

EXIT_KAFKA = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def replay(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Dataset to replay: .parquet or .csv.")],
    mappings: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="FIELD=COLUMN",
            help="Read FIELD (tx_id, tx_time, customer_id, terminal_id, amount, currency, "
            "is_fraud, reported_at, channel, merchant_category, country) from COLUMN. "
            "Repeatable.",
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(help="Seconds of event time per wall-clock second (1 = real time)."),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Events per second, evenly.")] = None,
    as_fast_as_possible: Annotated[
        bool, typer.Option("--max", help="As fast as possible (the default).")
    ] = False,
    start: Annotated[
        str | None,
        typer.Option("--from", help="First event time to send, ISO-8601 (2018-05-01, ...T12:00Z)."),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Send events before this time, ISO-8601.")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(help="Stop after this many transactions (reports due before included)."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(help="Read the whole file once first: check every row, count the events."),
    ] = True,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue a replay of the same file with the same options that stopped "
            "early: every partition gets exactly the events it does not hold yet (read "
            "from its last record's fraudstream-replay-seq header).",
        ),
    ] = False,
    outage_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help="How long to wait for an unreachable Kafka before giving up (then "
            "--resume continues). Default 600 s (10 min).",
        ),
    ] = 600.0,
) -> None:
    """Replay a dataset into the transactions and fraud-reports topics, in event-time order.

    Transactions are keyed by customer_id, with the transaction time as Kafka timestamp;
    each labelled fraud also sends a FraudReport (keyed by terminal_id) at its reported_at.
    Every event is written once: a broker outage is waited for (--outage-timeout), then
    each partition gets the events it lacks; a replay that stopped continues with --resume.
    """
    settings: Settings = ctx.obj
    # Imported here: polars and aiokafka would slow down every other command's start.
    from features.dataset import DatasetError, parse_mappings
    from streams.replay.events import merge_events
    from streams.replay.pacing import Pacer, Pacing
    from streams.replay.reader import Dataset, Window

    try:
        pacing = Pacing.from_options(
            speed=speed, rate=rate, as_fast_as_possible=as_fast_as_possible
        )
        window = Window(_instant(start, "--from"), _instant(end, "--to"))
        if (
            window.start_ms is not None
            and window.end_ms is not None
            and not window.start_ms < window.end_ms
        ):
            raise ValueError(f"--from {start} is not before --to {end}")
        if limit is not None and limit < 1:
            raise ValueError(f"--limit must be a positive integer, got {limit}")
        dataset = Dataset(path, parse_mappings(mappings or []))
        survey = _survey(dataset, window, limit) if check else None
    except (ValueError, DatasetError) as exc:  # DatasetError is a ValueError
        _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        _fail("interrupted before anything was sent", EXIT_INTERRUPTED)
    if survey is not None and survey.events == 0:
        _fail(f"nothing to replay: {_nothing(dataset, window)}", EXIT_USAGE)

    frames = merge_events(dataset.chunks(window, encode=True), encoded=True, limit=limit)
    try:
        first = next(frames, None)
    except DatasetError as exc:
        _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        _fail("interrupted before anything was sent", EXIT_INTERRUPTED)
    if first is None:
        _fail(f"nothing to replay: {_nothing(dataset, window)}", EXIT_USAGE)
    if dataset.labels_without_report_time:
        typer.echo(f"{path} labels frauds but has no reported_at: no fraud reports are sent")

    def all_frames() -> Iterator[pl.DataFrame]:
        yield first
        yield from frames

    with _progress(survey) as progress:
        try:
            result = asyncio.run(
                _send(
                    settings,
                    first["time"][0],
                    all_frames(),
                    Pacer(pacing),
                    progress,
                    resume=resume,
                    outage_timeout_s=outage_timeout,
                )
            )
        except KeyboardInterrupt:  # before the signal handlers are in place
            _fail("interrupted before anything was sent", EXIT_INTERRUPTED)
        except asyncio.CancelledError:  # a second Ctrl-C
            _fail("aborted: events handed to Kafka may not all be delivered", EXIT_INTERRUPTED)
        except Exception as exc:
            from streams.kafka import BrokerUnavailableError
            from streams.replay.sender import ReplayError, SourceFailedError

            if isinstance(exc, SourceFailedError):
                sent = exc.result
                last = f"; the last: {sent.last.describe()}" if sent.last else ""
                _fail(
                    f"{exc.cause} (stopped after {sent.stats.events} events, all delivered{last})",
                    EXIT_USAGE,
                )
            if isinstance(exc, BrokerUnavailableError | ReplayError):
                _fail(str(exc), EXIT_KAFKA)
            raise
    _summarise(settings, path, result, pacing)
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


def _survey(dataset: Dataset, window: Window, limit: int | None) -> StreamStats:
    """Read the file once without encoding: every row checked, the events counted."""
    from rich.console import Console

    from streams.replay.events import StreamStats, count, merge_events

    stats = StreamStats()
    console = Console(stderr=True)
    with (
        console.status(f"checking {dataset.path}", spinner="dots")
        if console.is_terminal
        else contextlib.nullcontext()
    ):
        for frame in merge_events(dataset.chunks(window, encode=False), encoded=False, limit=limit):
            count(frame, stats)
    return stats


async def _send(
    settings: Settings,
    oldest_ms: int,
    frames: Iterator[pl.DataFrame],
    pacer: Pacer,
    progress: _ProgressBar,
    *,
    resume: bool,
    outage_timeout_s: float,
) -> ReplayResult:
    from streams.replay.sender import Sender, prepare_topics

    topics = await prepare_topics(settings, oldest_ms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def interrupt() -> None:
        if stop.is_set() and main is not None:
            main.cancel()  # a second Ctrl-C: stop waiting for the flush
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    try:
        sender = Sender(
            settings,
            topics,
            pacer,
            progress.update,
            resume=resume,
            outage_timeout_s=outage_timeout_s,
        )
        return await sender.run(frames, stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


class _ProgressBar:
    """A rich progress bar of transactions sent, with the rate and the current event time."""

    def __init__(self, progress: Progress | None, total: int | None) -> None:
        self._progress = progress
        self._task = (
            progress.add_task("replay", total=total, reports=0, rate="", event_time="")
            if progress
            else None
        )
        self._started = time.monotonic()
        self._shown = 0.0

    def update(self, stats: StreamStats, time_ms: int) -> None:
        """Show the counts so far (at most ten times a second)."""
        if self._progress is None or self._task is None:
            return
        now = time.monotonic()
        if now - self._shown < 0.1:
            return
        self._shown = now
        from features.dataset import iso_ms

        rate = stats.events / max(now - self._started, 1e-9)
        self._progress.update(
            self._task,
            completed=stats.transactions,
            reports=stats.reports,
            rate=f"{rate:,.0f} ev/s",
            event_time=iso_ms(time_ms)[:19],
        )


@contextlib.contextmanager
def _progress(survey: StreamStats | None) -> Iterator[_ProgressBar]:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:
        yield _ProgressBar(None, None)
        return
    progress = Progress(
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("transactions, {task.fields[reports]} reports"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("event time {task.fields[event_time]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        yield _ProgressBar(progress, survey.transactions if survey else None)


def _summarise(settings: Settings, path: Path, result: ReplayResult, pacing: Pacing) -> None:
    from features.dataset import iso_ms

    stats = result.stats
    names = settings.topic_names
    rate = stats.events / result.elapsed_s if result.elapsed_s > 0 else 0.0
    lines = [
        f"{'interrupted' if result.interrupted else 'replayed'} {path}: "
        f"{stats.transactions} transactions to {names['transactions']}, "
        f"{stats.reports} fraud reports to {names['fraud_reports']} in "
        f"{result.elapsed_s:.1f} s ({rate:,.0f} events/s; pace: {pacing.describe()})"
    ]
    if stats.first_ms is not None and stats.last_ms is not None:
        lines.append(f"event time {iso_ms(stats.first_ms)} .. {iso_ms(stats.last_ms)}")
    if result.resumed:
        lines.append(f"resumed: {result.skipped} events were in the topics already, not sent")
    if result.outages:
        lines.append(f"rode out {result.outages} Kafka outage(s), nothing written twice")
    if result.interrupted:
        last = result.last.describe() if result.last else "nothing"
        typer.echo(
            f"fraudstream replay: interrupted: {stats.events} events sent and delivered; "
            f"the last: {last}",
            err=True,
        )
    for line in lines:
        typer.echo(line)


def _instant(text: str | None, option: str) -> int | None:
    """Epoch ms of an ISO-8601 date or date-time (UTC unless it says otherwise)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{option} must be an ISO-8601 date or date-time, got {text!r}"
            ) from None
        moment = datetime(day.year, day.month, day.day)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _nothing(dataset: Dataset, window: Window) -> str:
    if window.start_ms is None and window.end_ms is None:
        return f"{dataset.path} has no transactions"
    from features.dataset import iso_ms

    start = iso_ms(window.start_ms) if window.start_ms is not None else "the start"
    end = iso_ms(window.end_ms) if window.end_ms is not None else "the end"
    return f"{dataset.path} has no events from {start} to {end}"


def _fail(message: str, code: int) -> NoReturn:
    """Print one line to stderr and exit with ``code``, without a traceback."""
    typer.echo(f"fraudstream replay: {message}", err=True)
    raise typer.Exit(code)
