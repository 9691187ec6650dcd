"""A long-running local service process tracked by a pid file.

The pid file alone cannot tell the truth about a service: the process may have been
killed by hand, and its pid reused by something else. So a process counts as ours only
while it is alive *and* its command line still names the program we started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A local service could not be installed, started or stopped; the message says why."""


@dataclass(frozen=True)
class ManagedProcess:
    """A background process started by fraudstream, found again through its pid file.

    Attributes:
        name: what the user calls the service ("kafka", "redis").
        pid_file: where the pid is kept between commands.
        log_file: where the process's stdout and stderr go.
        marker: a string its command line must contain for the pid to still be ours.
    """

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def pid(self) -> int | None:
        """Return the pid of our running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        command_line = _command_line(pid)
        # An empty command line is a process rewriting its title (redis-server does).
        if command_line is not None and (self.marker in command_line or not command_line):
            return pid
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        return None

    def start(self, argv: Sequence[str]) -> int:
        """Start the process in its own session, output to the log file; return its pid.

        ``posix_spawn`` rather than ``subprocess.Popen``: the service outlives this
        command, and a dropped Popen object would complain that its child still runs.
        """
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid = os.posix_spawn(
            argv[0],
            list(argv),
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (
                    os.POSIX_SPAWN_OPEN,
                    1,
                    str(self.log_file),
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                    0o644,
                ),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
        self.pid_file.write_text(f"{pid}\n")
        return pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the process (SIGTERM, then SIGKILL after the timeout); return if it ran."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _is_running(pid):
            time.sleep(0.1)
        if _is_running(pid):
            logger.warning(
                "%s (pid %d) ignored SIGTERM for %.0fs; killing it", self.name, pid, timeout_s
            )
            _signal_group(pid, signal.SIGKILL)
            while _is_running(pid):
                time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        return True


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    alive: Callable[[], bool],
    what: str,
    interval_s: float = 0.25,
) -> None:
    """Poll ``ready`` until it is true; fail early when the process died.

    Raises:
        ServiceError: the process exited, or the timeout passed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if ready():
            return
        if not alive():
            raise ServiceError(f"{what} exited during start-up")
        if time.monotonic() >= deadline:
            raise ServiceError(f"{what} did not answer within {timeout_s:.0f}s")
        time.sleep(interval_s)


def tail_of(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, to explain a failed start."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def port_is_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Return whether something listens on host:port.

    A connect to a free port in the ephemeral range can succeed by connecting to itself
    (TCP simultaneous open); such a self-connection is not a listener.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            return bool(sock.getsockname() != sock.getpeername())
    except OSError:
        return False


def _command_line(pid: int) -> str | None:
    """The command line of a live, non-zombie process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The state follows the parenthesised command name; Z means a zombie: exited.
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _is_running(pid: int) -> bool:
    _reap(pid)
    return _command_line(pid) is not None


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child, so it does not linger."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group we created for the service (its children too)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
