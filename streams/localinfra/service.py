"""What every local service shares: idempotent start that waits for an answer, stop, status.

Subclasses say how to prepare the service (install, render its config) and how to ask it
whether it answers; the life cycle around that is the same for Kafka and Redis.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from streams.localinfra.process import (
    ManagedProcess,
    ServiceError,
    port_is_open,
    tail_of,
    wait_until,
)
from streams.settings import Settings


@dataclass(frozen=True)
class ServiceStatus:
    """The truth about a local service: is our process alive, does the port answer."""

    name: str
    address: str
    pid: int | None
    answering: bool

    @property
    def healthy(self) -> bool:
        """Running and answering."""
        return self.pid is not None and self.answering

    def __str__(self) -> str:
        if self.pid is None:
            other = " (but something else answers on its port)" if self.answering else ""
            return f"{self.name}: stopped{other}"
        state = "answering" if self.answering else "NOT answering"
        return f"{self.name}: running (pid {self.pid}) at {self.address}, {state}"


class LocalService(ABC):
    """A service fraudstream runs on 127.0.0.1 for development and tests."""

    name: str
    start_timeout_s: float = 60.0
    stop_timeout_s: float = 30.0
    port_settings: str = ""

    def __init__(self, process: ManagedProcess, ports: Sequence[int]) -> None:
        self.process = process
        self.ports = list(ports)

    @property
    def address(self) -> str:
        """The client-facing listener."""
        return f"127.0.0.1:{self.ports[0]}"

    @abstractmethod
    def answers(self) -> bool:
        """Whether the service answers a real request (not just a TCP connect)."""

    @abstractmethod
    def prepare(self) -> list[str]:
        """Install what is missing, write the config; return the command line to run."""

    def log_files(self) -> list[Path]:
        """Logs whose tail explains a failed start."""
        return [self.process.log_file]

    def start(self) -> str:
        """Start unless running; wait until it answers; say what was done."""
        if self.process.pid() is not None:
            self._wait_until_answering()
            return f"{self.name} already running at {self.address}"
        for port in self.ports:
            if _still_open(port):
                raise ServiceError(
                    f"port {port} is taken by another process; choose "
                    f"free ports with {self.port_settings}"
                )
        self.process.start(self.prepare())
        try:
            self._wait_until_answering()
        except ServiceError as exc:
            tails = "\n".join(tail_of(path) for path in self.log_files())
            self.process.stop(self.stop_timeout_s)
            raise ServiceError(f"{exc}; last log lines:\n{tails}") from exc
        return f"{self.name} started at {self.address}"

    def stop(self) -> str:
        """Stop if running (SIGTERM, then SIGKILL); say what was done."""
        if self.process.stop(self.stop_timeout_s):
            return f"{self.name} stopped"
        return f"{self.name} was not running"

    def status(self) -> ServiceStatus:
        """Check the process and the listener, each for itself."""
        return ServiceStatus(self.name, self.address, self.process.pid(), self.answers())

    def _wait_until_answering(self) -> None:
        wait_until(
            self.answers,
            timeout_s=self.start_timeout_s,
            alive=lambda: self.process.pid() is not None,
            what=f"{self.name} at {self.address}",
        )


@dataclass(frozen=True)
class ClusterStatus(ServiceStatus):
    """A cluster's status, and each node's: a half-running cluster says which half."""

    nodes: tuple[ServiceStatus, ...] = ()

    def __str__(self) -> str:
        head = super().__str__()
        if self.pid is None:
            return head
        states = (
            f"{n.address} pid {n.pid}" if n.pid else f"{n.address} stopped" for n in self.nodes
        )
        return f"{head} [{', '.join(states)}]"


NodeT = TypeVar("NodeT", bound=LocalService)


class LocalCluster(LocalService, Generic[NodeT]):
    """Several local services (the nodes) that together are one service, a cluster.

    Each node keeps the life cycle of a single service (its own pid file, start, stop);
    the cluster starts, stops and reports them together. Subclasses say how the nodes
    come up together and when the cluster as a whole answers.
    """

    def __init__(self, settings: Settings, nodes: Sequence[NodeT]) -> None:
        self.settings = settings
        self.nodes: list[NodeT] = list(nodes)
        # The base class's own process is the first node's; the life cycle works on
        # every node.
        super().__init__(self.nodes[0].process, [p for n in self.nodes for p in n.ports])

    def prepare(self) -> list[str]:
        """No single command line: :meth:`start` starts each node with its own."""
        raise NotImplementedError("a cluster starts its nodes one by one: call start()")

    def log_files(self) -> list[Path]:
        """Every node's logs."""
        return [path for node in self.nodes for path in node.log_files()]

    def cluster_status(self, answering: bool) -> ClusterStatus:
        """The cluster's status from its nodes', with whether the cluster as a whole answers."""
        nodes = tuple(node.status() for node in self.nodes)
        pids = [node.pid for node in nodes if node.pid is not None]
        return ClusterStatus(self.name, self.address, pids[0] if pids else None, answering, nodes)

    def stop_started(self, was_running: Sequence[bool]) -> None:
        """Stop the nodes a failed start started, so that it leaves nothing behind."""
        for node, running in zip(self.nodes, was_running, strict=True):
            if not running:
                node.stop()


#: How long a start waits for a port to be released before calling it taken.
PORT_RELEASE_S = 3.0


def _still_open(port: int) -> bool:
    """Whether something listens on ``port`` and keeps listening for `PORT_RELEASE_S`.

    A service killed a moment ago can still hold its ports: its main thread is a zombie
    (so it counts as stopped) while the JVM's other threads are still exiting, and the
    sockets close with the last of them.
    """
    deadline = time.monotonic() + PORT_RELEASE_S
    while port_is_open("127.0.0.1", port):
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.1)
    return False
