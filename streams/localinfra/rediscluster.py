"""A local three-master Redis Cluster on 127.0.0.1, for the ``redis://...?cluster=true`` store.

Not among the default services (``fraudstream infra up`` leaves it alone): ``fraudstream
infra up --only redis-cluster`` starts it. Three redis-server processes, each a
:class:`LocalRedisClusterNode` with its own pid file, on ``local_redis_cluster_port`` and
the two ports above it (their cluster buses 10000 higher). Layout, per node, under
``settings.local_dir / "redis-cluster" / "<port>"``: ``redis.conf`` (rendered from
deploy/local/redis/redis-cluster.conf), ``data/`` (append-only file, RDB snapshots),
``nodes.conf`` (the cluster's own record of nodes and slots), ``redis.log``, ``redis.pid``
and ``redis.out``.

The first start joins the three empty nodes with ``redis-cli --cluster create``; later
starts leave that to Redis: each node finds the cluster again in its ``nodes.conf``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from streams.localinfra.kafka import DEPLOY_DIR
from streams.localinfra.process import (
    ServiceError,
    tail_of,
    wait_until,
)
from streams.localinfra.redis import LocalRedis
from streams.localinfra.service import LocalCluster, ServiceStatus
from streams.settings import CLUSTER_BUS_OFFSET, Settings

#: Longest ``redis-cli --cluster create`` may take (it waits for the nodes to agree).
CREATE_TIMEOUT_S = 60.0


class LocalRedisClusterNode(LocalRedis):
    """One master of the local cluster: a redis-server with cluster mode on.

    A service of its own, so that each process gets the life cycle every local service
    has (idempotent start that waits for PING, stop, a pid file that tells the truth).
    """

    port_settings = "FRAUDSTREAM_LOCAL_REDIS_CLUSTER_PORT"
    template = "redis-cluster.conf"

    def __init__(self, settings: Settings, port: int, deploy_dir: Path = DEPLOY_DIR) -> None:
        self.name = f"redis-cluster node {port}"
        home = settings.local_dir / "redis-cluster" / str(port)
        self.nodes_file = home / "nodes.conf"
        super().__init__(
            settings, deploy_dir, port=port, home=home, extra_ports=(port + CLUSTER_BUS_OFFSET,)
        )

    def cluster_info(self) -> dict[str, str] | None:
        """The node's CLUSTER INFO fields, or None when it does not answer."""
        info = self._ask(lambda client: client.cluster("INFO"))  # parsed by redis-py
        if not isinstance(info, dict):
            return None
        return {str(name): str(value) for name, value in info.items()}

    def template_values(self) -> dict[str, object]:
        """The single server's placeholders, and where the node keeps its cluster state."""
        return {**super().template_values(), "nodes_file": self.nodes_file}


class LocalRedisCluster(LocalCluster[LocalRedisClusterNode]):
    """Three local masters joined into one Redis Cluster: start, stop, status."""

    name = "redis-cluster"
    start_timeout_s = 60.0
    port_settings = "FRAUDSTREAM_LOCAL_REDIS_CLUSTER_PORT"

    def __init__(self, settings: Settings, deploy_dir: Path = DEPLOY_DIR) -> None:
        super().__init__(
            settings,
            [
                LocalRedisClusterNode(settings, port, deploy_dir)
                for port in settings.local_redis_cluster_ports
            ],
        )

    @property
    def address(self) -> str:
        """Every node, as cluster clients list their startup nodes."""
        return ",".join(node.address for node in self.nodes)

    @property
    def store_url(self) -> str:
        """The table store URL of this cluster."""
        return self.settings.local_redis_cluster_url

    def answers(self) -> bool:
        """Whether every node answers and says the cluster is ok (all slots served)."""
        for node in self.nodes:
            info = node.cluster_info()
            if info is None or info.get("cluster_state") != "ok":
                return False
        return True

    def start(self) -> str:
        """Start the nodes not running, join them if new; wait until the cluster is ok.

        Nodes started by this call are stopped again if the cluster does not come up,
        so a failed start leaves nothing behind.
        """
        was_running = [node.process.pid() is not None for node in self.nodes]
        if all(was_running) and self.answers():
            return f"{self.name} already running at {self.address}"
        try:
            for node in self.nodes:
                node.start()
            created = self._create_if_new()
            self._wait_until_answering()
        except ServiceError:
            self.stop_started(was_running)
            raise
        how = "created and started" if created else "started"
        return f"{self.name} {how} at {self.address} (store URL {self.store_url})"

    def stop(self) -> str:
        """Stop every running node (SIGTERM, then SIGKILL); say what was done."""
        ran = [node.process.stop(node.stop_timeout_s) for node in reversed(self.nodes)]
        return f"{self.name} stopped" if any(ran) else f"{self.name} was not running"

    def status(self) -> ServiceStatus:
        """The cluster answers when every node does with cluster_state:ok."""
        return self.cluster_status(self.answers())

    def _create_if_new(self) -> bool:
        """Join the nodes into a cluster unless they already form one; return if created.

        Only when no node has a slot: nodes that have slots are a cluster restarting,
        which Redis puts together again itself from the nodes files.
        """
        infos = [node.cluster_info() or {} for node in self.nodes]
        if any(info.get("cluster_slots_assigned", "0") != "0" for info in infos):
            return False
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ServiceError("redis-cli not found: install it (apt-get install redis-tools)")
        env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
        password = self.settings.redis_password
        if password:
            # The environment, never the command line, where any user could read it.
            env["REDISCLI_AUTH"] = password.get_secret_value()
        argv = [cli, "--cluster", "create", *(node.address for node in self.nodes)]
        argv += ["--cluster-replicas", "0", "--cluster-yes"]
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=env,
                timeout=CREATE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"redis-cli --cluster create took over {exc.timeout:.0f}s") from None
        if result.returncode != 0:
            raise ServiceError(
                "redis-cli --cluster create failed:\n" + (result.stdout + result.stderr)[-2000:]
            )
        return True

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
            raise ServiceError(
                f"{exc} (a cluster whose nodes disagree never gets ok: stop it and remove "
                f"{self.settings.local_dir / 'redis-cluster'} to start afresh); "
                f"last log lines:\n{tails}"
            ) from exc
