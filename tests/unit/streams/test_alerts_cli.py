"""``fraudstream alerts``: its pure helpers, its table layout and its refusals (no broker)."""

from __future__ import annotations

import io
import json
import socket
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rich.console import Console
from typer.testing import CliRunner

from streams.alertfeed import FeedMessage, StartAt, start_offsets
from streams.cli import cli
from streams.cli.alerts import (
    DEFAULT_LAST,
    TABLE_COLUMNS,
    _TablePrinter,
    alert_row,
    choose_start,
    json_line,
    most_recent,
    parse_since,
    table_columns,
)
from streams.contracts import ALERT
from streams.records import Alert, AlertReason, alert_id

runner = CliRunner()

NOW_MS = int(datetime(2026, 11, 26, 12, 0, tzinfo=UTC).timestamp() * 1000)


def _alert(
    *, tx_id: str = "tx-1", customer: str = "c-17", reasons: int = 2, score: float = 0.91
) -> Alert:
    return Alert(
        alert_id=alert_id(tx_id, "v12"),
        tx_id=tx_id,
        customer_id=customer,
        terminal_id="term-9",
        amount=Decimal("1234.50"),
        currency="EUR",
        tx_time=NOW_MS - 5_000,
        score=score,
        threshold=0.5,
        model_version="v12",
        reasons=[
            AlertReason(feature=f"feature_{i}", value=1 / (i + 3), contribution=0.1)
            for i in range(reasons)
        ],
        features={"amount": 1234.5},
        emitted_at=NOW_MS,
        latency_ms=37,
    )


def _message(timestamp_ms: int, partition: int = 0, offset: int = 0) -> FeedMessage:
    return FeedMessage(timestamp_ms, b"{}", partition, offset)


# --- --since -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ago_ms"),
    [
        ("90s", 90_000),
        ("15m", 900_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1w", 604_800_000),
        ("1h30m", 5_400_000),
        (" 2H ", 7_200_000),
        ("0m", 0),
    ],
)
def test_since_accepts_durations_before_now(text: str, ago_ms: int) -> None:
    assert parse_since(text, NOW_MS) == NOW_MS - ago_ms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T10:00", datetime(2026, 11, 26, 10, 0, tzinfo=UTC)),  # naive: UTC
        ("2026-11-26T10:00:30.250Z", datetime(2026, 11, 26, 10, 0, 30, 250_000, tzinfo=UTC)),
        ("2026-11-26T11:00+01:00", datetime(2026, 11, 26, 10, 0, tzinfo=UTC)),
        ("2026-11-26", datetime(2026, 11, 26, tzinfo=UTC)),
    ],
)
def test_since_accepts_iso_8601_times(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW_MS) == int(expected.timestamp() * 1000)


@pytest.mark.parametrize("text", ["yesterday", "", "15", "15 m", "-5m", "2h-", "1y", "26/11/2026"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="--since must be"):
        parse_since(text, NOW_MS)


def test_since_refuses_times_before_1970() -> None:
    with pytest.raises(ValueError, match="before 1970"):
        parse_since("1969-12-31T23:00", NOW_MS)
    with pytest.raises(ValueError, match="before 1970"):
        parse_since("1000w", 1_000)


# --- start position ----------------------------------------------------------------------


def test_start_defaults_to_the_last_alerts_or_to_now_when_following() -> None:
    assert choose_start(follow=False, from_beginning=False, since_ms=None, last=None) == (
        StartAt.last(DEFAULT_LAST)
    )
    assert choose_start(follow=True, from_beginning=False, since_ms=None, last=None) == (
        StartAt.end()
    )
    assert choose_start(follow=True, from_beginning=False, since_ms=None, last=5) == (
        StartAt.last(5)
    )
    assert choose_start(follow=False, from_beginning=False, since_ms=None, last=0) == (
        StartAt.end()
    )


def test_start_from_beginning_or_since() -> None:
    assert choose_start(follow=True, from_beginning=True, since_ms=None, last=None) == (
        StartAt.beginning()
    )
    assert choose_start(follow=False, from_beginning=False, since_ms=123, last=None) == (
        StartAt.time(123)
    )


@pytest.mark.parametrize(
    ("from_beginning", "since_ms", "last", "named"),
    [
        (True, 5, None, "--from-beginning, --since"),
        (True, None, 3, "--from-beginning, --last"),
        (False, 5, 0, "--since, --last"),
    ],
)
def test_start_options_exclude_each_other(
    from_beginning: bool, since_ms: int | None, last: int | None, named: str
) -> None:
    with pytest.raises(ValueError, match=f"use only one of {named}"):
        choose_start(follow=False, from_beginning=from_beginning, since_ms=since_ms, last=last)


def test_start_offsets_stay_within_each_partition() -> None:
    beginnings = {0: 0, 1: 40, 2: 7}
    ends = {0: 100, 1: 45, 2: 7}
    assert start_offsets(StartAt.beginning(), beginnings, ends) == {0: 0, 1: 40, 2: 7}
    assert start_offsets(StartAt.end(), beginnings, ends) == {0: 100, 1: 45, 2: 7}
    # The last 10: partition 1 only keeps 5, partition 2 is empty.
    assert start_offsets(StartAt.last(10), beginnings, ends) == {0: 90, 1: 40, 2: 7}
    # By time: a partition with nothing as recent starts at its end.
    by_time: dict[int, int | None] = {0: 63, 1: None, 2: None}
    assert start_offsets(StartAt.time(1), beginnings, ends, by_time) == {0: 63, 1: 45, 2: 7}


def test_start_at_refuses_negative_values() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        StartAt.last(-1)


# --- the last N across partitions --------------------------------------------------------


def test_most_recent_sorts_by_kafka_time_across_partitions() -> None:
    alert = _alert()
    items = [
        (_message(300, partition=0, offset=9), alert),
        (_message(100, partition=1, offset=4), alert),
        (_message(200, partition=2, offset=1), alert),
        (_message(200, partition=0, offset=8), alert),
    ]
    kept = most_recent(items, 3)
    assert [(m.timestamp_ms, m.partition) for m, _ in kept] == [(200, 0), (200, 2), (300, 0)]
    assert most_recent(items, 10) == sorted(
        items, key=lambda i: (i[0].timestamp_ms, i[0].partition, i[0].offset)
    )
    assert most_recent(items, 0) == []


# --- formatting --------------------------------------------------------------------------


def test_alert_row_shows_the_alert_in_column_order() -> None:
    alert = _alert(reasons=5)
    row = alert_row(alert, NOW_MS + 1_999)
    assert len(row) == len(TABLE_COLUMNS)
    assert dict(zip((c.title for c in TABLE_COLUMNS), row, strict=True)) == {
        "time (UTC)": "2026-11-26 12:00:01",
        "alert": alert.alert_id[:8],
        "customer": "c-17",
        "terminal": "term-9",
        "amount": "1234.50 EUR",
        "score": "0.910",
        "thr": "0.500",
        "model": "v12",
        # The top three reasons only, most important first, four significant digits.
        "top reasons": "feature_0=0.3333, feature_1=0.25, feature_2=0.2",
        "latency_ms": "37",
    }


def test_alert_row_without_reasons_shows_a_dash() -> None:
    assert alert_row(_alert(reasons=0), NOW_MS)[8] == "-"


def test_json_line_passes_the_wire_bytes_through() -> None:
    raw = ALERT.encode(_alert())
    assert json_line(raw) == raw
    assert json_line(raw + b"\n") == raw


def test_json_line_compacts_a_pretty_printed_value_to_one_line() -> None:
    wire = json.loads(ALERT.encode(_alert()))
    pretty = json.dumps(wire, indent=2).encode()
    line = json_line(pretty)
    assert b"\n" not in line
    assert json.loads(line) == wire


def test_table_columns_drop_the_optional_ones_on_narrow_terminals() -> None:
    titles = [c.title for c in TABLE_COLUMNS]

    def shown(width: int) -> list[str]:
        return [titles[i] for i in table_columns(width)]

    assert shown(200) == titles
    assert shown(100) == [
        "time (UTC)",
        "alert",
        "customer",
        "amount",
        "score",
        "top reasons",
        "latency_ms",
    ]
    assert shown(80) == ["time (UTC)", "customer", "amount", "score", "top reasons"]
    assert shown(20) == shown(80)  # never fewer than the essentials


@pytest.mark.parametrize("width", [80, 120, 200])
def test_table_rows_line_up_with_the_header(width: int) -> None:
    console = Console(width=width, record=True, file=io.StringIO())
    printer = _TablePrinter(console)
    printer.start()
    printer(_message(NOW_MS), _alert(customer="c", reasons=1))
    printer(_message(NOW_MS), _alert(customer="customer-with-a-long-id", reasons=3, score=1.0))
    header, rule, short, long = console.export_text().splitlines()
    assert len(rule) == width
    # Every header title starts where its cells start.
    starts = [short.index(cell) for cell in ("c ", "1234.50 EUR")]
    assert [long.index(cell) for cell in ("customer-wi", "1234.50 EUR")] == starts
    assert [header.index("customer"), header.index("amount") - 5] == starts
    assert "customer-wi…" in long  # cut, not wrapped: one line per alert


# --- refusals ----------------------------------------------------------------------------


def _dead_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(
        cli, ["--bootstrap-servers", f"127.0.0.1:{_dead_port()}", "alerts", *args]
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from-beginning", "--since", "1h"], "use only one of --from-beginning, --since"),
        (["--last", "5", "--since", "1h"], "use only one of --since, --last"),
        (["--since", "tomorrow"], "--since must be an ISO-8601 time"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], message: str) -> None:
    code, stdout, stderr = _invoke(*args)
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("fraudstream alerts: ")
    assert stderr.count("\n") == 1
    assert message in stderr


def test_an_unreachable_broker_exits_1_with_one_line() -> None:
    code, stdout, stderr = _invoke("--output", "json")
    assert code == 1
    assert stdout == ""
    assert stderr.startswith("fraudstream alerts: no Kafka broker answers at 127.0.0.1:")
    assert stderr.count("\n") == 1
    assert "Traceback" not in stderr
