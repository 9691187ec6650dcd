"""A one-node KRaft Kafka broker on 127.0.0.1, its jars resolved from Maven Central by mvn.

Layout under ``settings.local_dir / "kafka"``: ``lib-<version>/`` (jars), ``data/`` (the
log directory, formatted once), ``logs/`` (server.log), ``server.properties`` (rendered
from deploy/local/kafka), ``kafka.pid`` and ``kafka.out`` (the JVM's own output).

The nodes of the local three-broker cluster (:mod:`streams.localinfra.kafkacluster`) are
this class on other ports, homes and templates; they share its ``lib-<version>/``.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import uuid
from base64 import urlsafe_b64encode
from pathlib import Path
from string import Template

from streams.kafka import broker_answers
from streams.localinfra.process import ManagedProcess, ServiceError, port_is_open
from streams.localinfra.service import LocalService
from streams.settings import PROJECT_ROOT, Settings

DEPLOY_DIR = PROJECT_ROOT / "deploy" / "local"
MIN_JAVA = 17


def new_cluster_id() -> str:
    """A random Kafka cluster id: 16 bytes in URL-safe base64, never starting with ``-``.

    The storage tool reads ``-t <id>``: an id starting with ``-`` (one in 64 of them) is
    taken for an option and the format fails; Kafka's own ``Uuid.randomUuid`` draws again
    in that case too.
    """
    while True:
        cluster = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster.startswith("-"):
            return cluster


class LocalKafka(LocalService):
    """Install, format, start, stop and inspect the local broker."""

    name = "kafka"
    start_timeout_s = 90.0
    stop_timeout_s = 60.0
    port_settings = "FRAUDSTREAM_LOCAL_KAFKA_PORT and FRAUDSTREAM_LOCAL_KAFKA_CONTROLLER_PORT"

    #: The directory under deploy/local holding the server.properties template.
    template = "kafka"

    def __init__(
        self,
        settings: Settings,
        deploy_dir: Path = DEPLOY_DIR,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        home: Path | None = None,
    ) -> None:
        self.settings = settings
        self.deploy_dir = deploy_dir
        self.port = settings.local_kafka_port if port is None else port
        self.controller_port = (
            settings.local_kafka_controller_port if controller_port is None else controller_port
        )
        self.home = settings.local_dir / "kafka" if home is None else home
        # Always the single broker's: every local node runs the same jars, resolved once.
        self.lib_dir = settings.local_dir / "kafka" / f"lib-{settings.local_kafka_version}"
        self.data_dir = self.home / "data"
        self.logs_dir = self.home / "logs"
        self.config_file = self.home / "server.properties"
        self.log4j_config = deploy_dir / "kafka" / "log4j2.properties"
        super().__init__(
            ManagedProcess(
                name=self.name,
                pid_file=self.home / "kafka.pid",
                log_file=self.home / "kafka.out",
                marker=str(self.config_file),
            ),
            ports=[self.port, self.controller_port],
        )

    def answers(self) -> bool:
        """Whether the broker answers a metadata request on its client listener."""
        if not port_is_open("127.0.0.1", self.port):
            return False
        local = self.settings.model_copy(
            update={
                "kafka_bootstrap_servers": self.address,
                "kafka_security_protocol": "PLAINTEXT",
            }
        )
        return asyncio.run(broker_answers(local, timeout_s=3.0))

    def prepare(self) -> list[str]:
        """Resolve the jars, render the config, format storage; return the JVM command."""
        java = _java()
        self._resolve_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.render_config())
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._format_storage(java)
        return [
            *self._jvm(java),
            *self.heap_options(),
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            "kafka.Kafka",
            str(self.config_file),
        ]

    def template_values(self) -> dict[str, object]:
        """What the config template's placeholders are filled with."""
        return {
            "broker_port": self.port,
            "controller_port": self.controller_port,
            "data_dir": self.data_dir,
        }

    def render_config(self) -> str:
        """The server.properties text: the template with its placeholders filled."""
        template = Template((self.deploy_dir / self.template / "server.properties").read_text())
        return template.substitute(self.template_values())

    def heap_options(self) -> list[str]:
        """The JVM's heap flags."""
        return ["-Xms256m", f"-Xmx{self.settings.local_kafka_heap}"]

    def cluster_id(self) -> str:
        """The id to format the log directory with: a new one, a cluster of one node."""
        return new_cluster_id()

    def log_files(self) -> list[Path]:
        """The JVM output and the broker's server.log."""
        return [self.process.log_file, self.logs_dir / "server.log"]

    def _jvm(self, java: str) -> list[str]:
        return [
            java,
            "-cp",
            f"{self.lib_dir}/*",
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j2.configurationFile={self.log4j_config}",
        ]

    def _resolve_jars(self) -> None:
        """Copy the broker's jars from Maven Central into lib-<version>, once."""
        done_marker = self.lib_dir / ".complete"
        if done_marker.exists():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError(
                "mvn not found: install Maven (apt-get install maven) to "
                "resolve the Kafka broker's jars"
            )
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(self.deploy_dir / "pom.xml"),
                f"-Dkafka.version={self.settings.local_kafka_version}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.lib_dir}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"mvn could not resolve Kafka {self.settings.local_kafka_version}:\n"
                + (result.stdout + result.stderr)[-2000:]
            )
        done_marker.write_text(self.settings.local_kafka_version + "\n")

    def _format_storage(self, java: str) -> None:
        """Format the KRaft log directory the first time (the storage tool refuses twice)."""
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                *self._jvm(java),
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                self.cluster_id(),
                "-c",
                str(self.config_file),
                *self.format_options(),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(
                "kafka storage format failed:\n" + (result.stdout + result.stderr)[-2000:]
            )

    def format_options(self) -> list[str]:
        """More arguments of the storage tool's ``format`` (a SCRAM user, say): none here."""
        return []


def _java() -> str:
    """The java executable, checked to be recent enough for Kafka 4."""
    java = shutil.which("java")
    if java is None:
        raise ServiceError(
            f"java not found: install a JDK {MIN_JAVA}+ "
            "(apt-get install openjdk-17-jdk-headless) to run the local broker"
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', result.stderr + result.stdout)
    if match is None or int(match.group(1)) < MIN_JAVA:
        found = match.group(1) if match else "unknown"
        raise ServiceError(f"java {found} found; Kafka needs Java {MIN_JAVA} or newer")
    return java
