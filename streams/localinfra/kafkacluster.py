"""A local three-broker KRaft Kafka cluster on 127.0.0.1, for fault tolerance tests.

Not among the default services (``fraudstream infra up`` leaves it alone): ``fraudstream
infra up --only kafka-cluster`` starts it. Three JVMs, each a :class:`LocalKafkaClusterNode`
(a :class:`~streams.localinfra.kafka.LocalKafka` with its own pid file) that is broker and
controller at once: node ``i`` (1..3) serves clients on ``local_kafka_cluster_port + i - 1``
and the KRaft quorum on ``local_kafka_cluster_port + 2 + i``. The quorum is static
(``controller.quorum.voters``), so any two nodes elect a leader and keep the cluster
writable; topics default to three replicas, two of them in sync for a write to succeed.

Layout under ``settings.local_dir / "kafka-cluster"``: ``cluster.id`` (the id every node's
storage is formatted with, chosen once) and per node ``<node id>/`` with ``data/``,
``logs/``, ``server.properties`` (rendered from deploy/local/kafka-cluster), ``kafka.pid``
and ``kafka.out``. The jars are the single broker's (``local_dir/kafka/lib-<version>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.kafka import client_options
from streams.localinfra.kafka import DEPLOY_DIR, LocalKafka
from streams.localinfra.process import ServiceError, tail_of, wait_until
from streams.localinfra.service import LocalCluster, ServiceStatus
from streams.settings import KAFKA_CLUSTER_NODES, Settings

#: The node ids, which are also the nodes' positions in the port layout.
NODE_IDS = tuple(range(1, KAFKA_CLUSTER_NODES + 1))


class LocalKafkaClusterNode(LocalKafka):
    """One node of the local cluster: a KRaft broker and controller with node.id 1..3.

    A service of its own, so each JVM gets the life cycle every local service has
    (idempotent start that waits for an answer, stop, a pid file that tells the truth),
    and a test can crash one (:meth:`kill`) and bring it back (:meth:`start`).
    """

    port_settings = "FRAUDSTREAM_LOCAL_KAFKA_CLUSTER_PORT"
    template = "kafka-cluster"
    # A broker's controlled shutdown needs the controller quorum to acknowledge it. The
    # node stopping last has none left if its peers finished first: Kafka would then wait
    # minutes. A clean stop takes about 6 s (the last controller's own raft shutdown
    # waits 5 s for peers already gone); after 15 s the node is killed instead, which
    # only costs log recovery at its next start.
    stop_timeout_s = 15.0

    def __init__(self, settings: Settings, node_id: int, deploy_dir: Path = DEPLOY_DIR) -> None:
        if node_id not in NODE_IDS:
            raise ValueError(f"node_id must be one of {NODE_IDS}, got {node_id}")
        self.node_id = node_id
        self.name = f"kafka-cluster node {node_id}"
        self.cluster_home = settings.local_dir / "kafka-cluster"
        super().__init__(
            settings,
            deploy_dir,
            port=settings.local_kafka_cluster_ports[node_id - 1],
            controller_port=settings.local_kafka_cluster_controller_ports[node_id - 1],
            home=self.cluster_home / str(node_id),
        )

    def template_values(self) -> dict[str, object]:
        """The single broker's placeholders, the node's id and the quorum's voters."""
        return {
            **super().template_values(),
            "node_id": self.node_id,
            "quorum_voters": quorum_voters(self.settings),
        }

    def heap_options(self) -> list[str]:
        """A fixed, small heap: three of these share the machine."""
        heap = self.settings.local_kafka_cluster_heap
        return [f"-Xms{heap}", f"-Xmx{heap}"]

    def cluster_id(self) -> str:
        """The cluster's one id: nodes formatted with different ids never form a quorum."""
        return shared_cluster_id(self.cluster_home / "cluster.id", super().cluster_id)

    def kill(self) -> int | None:
        """Crash the node: SIGKILL, no controlled shutdown; return the pid, None if stopped.

        What a fault tolerance test needs: the other nodes learn of the loss only when the
        node's heartbeats stop. Returns once the process is gone and reaped.
        """
        pid = self.process.pid()
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

        def gone() -> bool:
            # Reap it if it is our child, or it lingers as a zombie of the caller.
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            return self.process.pid() is None

        wait_until(gone, timeout_s=10.0, alive=lambda: True, what=f"{self.name} kill")
        return pid


class LocalKafkaCluster(LocalCluster[LocalKafkaClusterNode]):
    """Three local KRaft nodes forming one Kafka cluster: start, stop, status."""

    name = "kafka-cluster"
    # Three JVMs start at once on what may be two cores.
    start_timeout_s = 120.0
    port_settings = "FRAUDSTREAM_LOCAL_KAFKA_CLUSTER_PORT"

    def __init__(self, settings: Settings, deploy_dir: Path = DEPLOY_DIR) -> None:
        super().__init__(
            settings, [LocalKafkaClusterNode(settings, i, deploy_dir) for i in NODE_IDS]
        )

    @property
    def address(self) -> str:
        """Every node's client listener: the cluster's bootstrap servers."""
        return self.settings.local_kafka_cluster_bootstrap

    def node(self, node_id: int) -> LocalKafkaClusterNode:
        """The node with this node.id (1..3)."""
        if node_id not in NODE_IDS:
            raise ValueError(f"node_id must be one of {NODE_IDS}, got {node_id}")
        return self.nodes[node_id - 1]

    def client_settings(self) -> Settings:
        """The settings with Kafka clients pointed at this cluster (plaintext, loopback)."""
        return self.settings.model_copy(
            update={
                "kafka_bootstrap_servers": self.address,
                "kafka_security_protocol": "PLAINTEXT",
            }
        )

    def brokers(self) -> set[int] | None:
        """The node ids of the brokers the cluster's metadata lists; None: no answer."""
        return asyncio.run(registered_brokers(self.client_settings()))

    def answers(self) -> bool:
        """Whether every node answers and the cluster's metadata lists all of them."""
        return all(node.answers() for node in self.nodes) and self.brokers() == set(NODE_IDS)

    def start(self) -> str:
        """Start the nodes not running, all at once; wait until the cluster has 3 brokers.

        At once, because a node answers only once a quorum (two controllers) elected a
        leader, and because three JVMs starting together take little longer than one.
        Nodes started by this call are stopped again if the cluster does not come up, so
        a failed start leaves nothing behind.
        """
        was_running = [node.process.pid() is not None for node in self.nodes]
        if all(was_running) and self.answers():
            return f"{self.name} already running at {self.address}"
        # Chosen before the nodes format their storage, in parallel, with it.
        self.nodes[0].cluster_id()
        try:
            with ThreadPoolExecutor(len(self.nodes), thread_name_prefix=self.name) as pool:
                futures = [pool.submit(node.start) for node in self.nodes]
            errors = [str(e) for f in futures if (e := f.exception()) is not None]
            if errors:
                raise ServiceError("; ".join(errors))
            self._wait_until_answering()
        except (ServiceError, OSError):
            self.stop_started(was_running)
            raise
        return (
            f"{self.name} started at {self.address} "
            f"({len(self.nodes)} brokers, FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS={self.address})"
        )

    def stop(self) -> str:
        """Stop every running node, all at once (SIGTERM, then SIGKILL); say what was done.

        At once, because a node's controlled shutdown needs the quorum: stopped one by
        one, the last node would always wait for controllers already gone. At once it
        still does now and then (its peers finish first); the node's ``stop_timeout_s``
        bounds that wait.
        """
        with ThreadPoolExecutor(len(self.nodes), thread_name_prefix=self.name) as pool:
            ran = list(pool.map(lambda n: n.process.stop(n.stop_timeout_s), self.nodes))
        return f"{self.name} stopped" if any(ran) else f"{self.name} was not running"

    def status(self) -> ServiceStatus:
        """The cluster answers when every node does and the metadata lists all three."""
        return self.cluster_status(self.answers())

    def _wait_until_answering(self) -> None:
        try:
            wait_until(
                self.answers,
                timeout_s=self.start_timeout_s,
                alive=lambda: all(node.process.pid() is not None for node in self.nodes),
                what=f"{self.name} at {self.address}",
            )
        except ServiceError as exc:
            tails = "\n".join(tail_of(path, lines=5) for path in self.log_files())
            raise ServiceError(f"{exc}; last log lines:\n{tails}") from exc


def quorum_voters(settings: Settings) -> str:
    """``controller.quorum.voters``: every node's id at its controller port."""
    ports = settings.local_kafka_cluster_controller_ports
    return ",".join(f"{i}@127.0.0.1:{port}" for i, port in zip(NODE_IDS, ports, strict=True))


def shared_cluster_id(path: Path, new: Callable[[], str]) -> str:
    """The id kept in ``path``, made with ``new`` the first time.

    Nodes format their storage in parallel threads: the file appears complete or not at
    all (written aside, then hard-linked into place), and only the first link wins.
    """
    with contextlib.suppress(FileNotFoundError):
        if kept := path.read_text().strip():
            return kept
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    aside.write_text(new() + "\n")
    try:
        os.link(aside, path)
    except FileExistsError:
        pass
    finally:
        aside.unlink()
    return path.read_text().strip()


async def registered_brokers(settings: Settings, timeout_s: float = 3.0) -> set[int] | None:
    """The node ids in the cluster's metadata (brokers not fenced); None: no answer."""
    admin = AIOKafkaAdminClient(
        request_timeout_ms=int(timeout_s * 1000), **client_options(settings)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        described = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        await admin.close()
    return {int(broker["node_id"]) for broker in described["brokers"]}
