"""The one logging configuration of every fraudstream process: text or JSON lines.

Every command configures logging here, and the worker tells Faust's worker not to
configure it again (``override_logging=False``): one format per process instead of ours
for the CLI and mode's for the worker.

``text`` is one line per record for people. ``json`` (``FRAUDSTREAM_LOG_FORMAT=json``)
is for log collectors: one JSON object per line, the exception's traceback inside the
object, so a multi-line traceback or message never becomes continuation lines that a
collector would ingest as records of their own.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Final, Literal, TextIO

#: The text format: time, level, logger, message.
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: LogRecord attributes that are not ``extra=`` fields.
_STANDARD_ATTRIBUTES: Final = frozenset(
    set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
)

LogFormat = Literal["text", "json"]


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Fields: ``time`` (ISO-8601 UTC, milliseconds), ``level``, ``logger``, ``message``
    (arguments merged), ``process``, then ``exception`` and ``stack`` when present, then
    any ``extra=`` fields (``str()`` of values JSON cannot encode). ``json.dumps``
    escapes newlines, so a traceback stays inside its line.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one JSON line (no trailing newline)."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


def python_level(level: str) -> str:
    """The logging level name of a fraudstream ``log_level`` (``warn`` -> ``WARNING``)."""
    return {"warn": "WARNING", "crit": "CRITICAL"}.get(level, level.upper())


def configure_logging(level: str, log_format: LogFormat, stream: TextIO | None = None) -> None:
    """Send every record at ``level`` or above to ``stream`` (stderr) in ``log_format``.

    Like ``logging.basicConfig``, it leaves a root logger that someone else configured
    alone (pytest's capture, an embedding application); calling it again replaces its
    own handler, so a second call changes the format instead of doubling the lines.

    Args:
        level: A fraudstream ``log_level`` (``debug``, ``info``, ``warn``, ``error``,
            ``crit``).
        log_format: ``text`` or ``json``.
        stream: Where to write; stderr by default.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _OURS, False)]
    if len(ours) != len(root.handlers):
        return
    for old in ours:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(python_level(level))


#: Marks the handler :func:`configure_logging` installed.
_OURS: Final = "_fraudstream_handler"
