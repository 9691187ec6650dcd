"""One log format per process: text lines, or one JSON object per line (streams.logsetup)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from streams.logsetup import JsonFormatter, configure_logging, python_level


@contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without pytest's capture handlers (added per test phase), restored."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    for handler in saved:
        root.removeHandler(handler)
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_hold_the_exception_and_extra_fields() -> None:
    out = io.StringIO()
    with bare_root():
        configure_logging("info", "json", out)
        log = logging.getLogger("fraudstream.test")
        log.debug("not shown")
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            log.exception("failed on %s", "line one\nline two", extra={"progress": {"alerts": 3}})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1  # the traceback and the newlines stay inside the object
    entry = json.loads(lines[0])
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "fraudstream.test"
    assert entry["message"] == "failed on line one\nline two"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad\nvalue" in entry["exception"]
    assert entry["progress"] == {"alerts": 3}
    assert entry["time"].endswith("+00:00")


def test_a_second_call_switches_the_format_without_doubling() -> None:
    out = io.StringIO()
    with bare_root() as root:
        configure_logging("info", "json", out)
        configure_logging("warn", "text", out)
        logging.getLogger("x").info("dropped at warn")
        logging.getLogger("x").warning("kept")
        assert len(root.handlers) == 1
    assert out.getvalue().count("kept") == 1
    assert " WARNING x: kept" in out.getvalue()


def test_a_root_configured_by_someone_else_is_left_alone() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    assert before  # pytest's capture handlers
    configure_logging("debug", "json", io.StringIO())
    assert root.handlers == before


def test_levels_and_unencodable_values() -> None:
    assert python_level("warn") == "WARNING"
    assert python_level("crit") == "CRITICAL"
    record = logging.LogRecord("n", logging.INFO, "", 0, "m", None, None)
    record.thing = object()
    assert json.loads(JsonFormatter().format(record))["thing"].startswith("<object")
