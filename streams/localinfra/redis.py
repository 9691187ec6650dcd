"""Debian's redis-server on 127.0.0.1, installed with apt-get when it is missing.

Layout under ``settings.local_dir / "redis"``: ``data/`` (append-only file and RDB
snapshots), ``redis.conf`` (rendered from deploy/local/redis), ``redis.log``, ``redis.pid``
and ``redis.out``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from string import Template

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streams.localinfra.kafka import DEPLOY_DIR
from streams.localinfra.process import ManagedProcess, ServiceError, port_is_open
from streams.localinfra.service import LocalService
from streams.settings import Settings


class LocalRedis(LocalService):
    """Install, start, stop and inspect the local redis-server."""

    name = "redis"
    start_timeout_s = 30.0
    port_settings = "FRAUDSTREAM_LOCAL_REDIS_PORT"

    #: The config template under deploy/local/redis.
    template = "redis.conf"

    def __init__(
        self,
        settings: Settings,
        deploy_dir: Path = DEPLOY_DIR,
        *,
        port: int | None = None,
        home: Path | None = None,
        extra_ports: tuple[int, ...] = (),
    ) -> None:
        self.settings = settings
        self.deploy_dir = deploy_dir
        self.port = settings.local_redis_port if port is None else port
        self.home = settings.local_dir / "redis" if home is None else home
        self.data_dir = self.home / "data"
        self.config_file = self.home / "redis.conf"
        super().__init__(
            ManagedProcess(
                name=self.name,
                pid_file=self.home / "redis.pid",
                log_file=self.home / "redis.out",
                # Before and after redis-server rewrites its process title
                # ("redis-server 127.0.0.1:PORT") its command line starts with this.
                marker="redis-server",
            ),
            ports=[self.port, *extra_ports],
        )

    def answers(self) -> bool:
        """Whether the server answers PING (with the configured password, if any)."""
        return self._ask(lambda client: bool(client.ping())) is True

    def _ask(self, question: Callable[[redis.Redis], object]) -> object:
        """One request to the server; None when it does not answer.

        Asked once, without redis-py's retries: a stopped node refuses at once, and
        status must say so at once (retrying with backoff took seconds per question).
        """
        if not port_is_open("127.0.0.1", self.port):
            return None
        password = self.settings.redis_password
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=password.get_secret_value() if password else None,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return question(client)
        except redis.RedisError:
            return None
        finally:
            client.close()

    def template_values(self) -> dict[str, object]:
        """What the config template's placeholders are filled with."""
        password = self.settings.redis_password
        return {
            "port": self.port,
            "data_dir": self.data_dir,
            "log_file": self.home / "redis.log",
            "requirepass": f'requirepass "{password.get_secret_value()}"' if password else "",
        }

    def prepare(self) -> list[str]:
        """Install redis-server if missing and render its config."""
        server = _redis_server()
        template = Template((self.deploy_dir / "redis" / self.template).read_text())
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(template.substitute(self.template_values()))
        self.config_file.chmod(0o600)
        return [server, str(self.config_file)]

    def log_files(self) -> list[Path]:
        """The process output and redis's own log."""
        return [self.process.log_file, self.home / "redis.log"]


def _redis_server() -> str:
    """The redis-server executable, installed from Debian's packages when missing."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise ServiceError("redis-server not found: install it (apt-get install redis-server)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "redis-server"]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceError("apt-get installed redis-server but it is not on PATH")
    return found
