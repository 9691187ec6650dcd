"""``fraudstream replay`` as a child process of a test, ended with the test.

A test that fails before it reads its replay to the end must not leave it sending into
the next test, nor leave its output pipe to be garbage-collected during another test,
whose ``ResourceWarning`` would then fail that test instead: the integration tests'
autouse fixture calls `stop_replays` after each test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams.settings import Settings

#: The replays started by the running test.
_replays: list[subprocess.Popen[bytes]] = []


def replay(settings: Settings, dataset: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``fraudstream replay`` on a dataset file (a child process, as users run it)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "--log-level", "warn", "replay", str(dataset), *args],
        env={**os.environ, **settings.as_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _replays.append(process)
    return process


def stop_replays() -> None:
    """Kill the replays the test left running and close their output pipes."""
    while _replays:
        process = _replays.pop()
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
