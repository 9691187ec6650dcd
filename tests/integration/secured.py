"""Secured local services for the security tests: SASL_SSL Kafka and TLS redis-server.

Both are the project's own local services (``LocalKafka``, ``LocalRedis``) started from a
temporary directory on free ports, with their configuration changed only where security
needs it, so the life cycle (start, wait for an answer, stop the process group, log tails
on failure) is the one ``fraudstream infra`` uses:

* Kafka: the client listener is SASL_SSL with SCRAM-SHA-512 and a PEM certificate from a
  throwaway CA; the controller and the inter-broker listeners are PLAINTEXT on 127.0.0.1
  (a single node never connects to itself as a client, and SCRAM between brokers would
  only add configuration). The one SCRAM user is written into the metadata log when the
  storage is formatted: a KRaft broker reads credentials from there, and no listener
  would let anyone in to create the first user. The same user may log in with PLAIN
  too (its password in the broker's JAAS config), for the mechanism whose token is
  the password itself.
* Redis: TLS only (``port 0``), ``requirepass``, no client certificates.

The certificates come from ``trustme``: a CA made for the test and nothing else.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis
import trustme
from cryptography.hazmat.primitives import serialization

from streams.kafka import broker_answers
from streams.localinfra import LocalKafka, LocalRedis
from streams.localinfra.process import port_is_open
from streams.redisclient import connect
from streams.settings import Settings

#: The SASL mechanism of the secured broker's clients (PLAIN is enabled besides it).
SCRAM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class Tls:
    """A throwaway CA and a server certificate for 127.0.0.1, as PEM files.

    Attributes:
        ca_file: The CA certificate: what clients verify the servers with.
        cert_file: The server's certificate chain.
        key_file: The server's private key, PKCS#8 (the only form Kafka's PEM keystore
            reads; trustme writes EC keys in OpenSSL's traditional form).
        keystore_file: Key then chain in one file: Kafka's ``ssl.keystore.location``.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    keystore_file: Path


def make_tls(directory: Path) -> Tls:
    """Write a new CA and a 127.0.0.1 server certificate signed by it into ``directory``."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    directory.mkdir(parents=True, exist_ok=True)
    tls = Tls(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server.key",
        keystore_file=directory / "keystore.pem",
    )
    ca.cert_pem.write_to_path(str(tls.ca_file))
    tls.cert_file.write_bytes(chain)
    tls.key_file.write_bytes(key_pem)
    tls.keystore_file.write_bytes(key_pem + chain)
    for path in (tls.key_file, tls.keystore_file):
        path.chmod(0o600)
    return tls


class SecuredKafka(LocalKafka):
    """A one-node KRaft broker whose client listener is SASL_SSL (SCRAM-SHA-512, PLAIN).

    Args:
        settings: The project's settings: where the local broker's jars are, the Kafka
            version. Only the jars are shared with the local broker.
        client: Settings of a client of this broker (address, SASL user, CA): the
            broker's user is made from them and its readiness checked with them.
        home: Where the config, data and logs go.
        controller_port: The KRaft controller's PLAINTEXT listener's port.
        internal_port: The inter-broker PLAINTEXT listener's port.
        tls: The broker's certificate.
    """

    name = "secured-kafka"
    start_timeout_s = 60.0

    def __init__(
        self,
        settings: Settings,
        *,
        client: Settings,
        home: Path,
        controller_port: int,
        internal_port: int,
        tls: Tls,
    ) -> None:
        host, _, port = client.kafka_bootstrap_servers.rpartition(":")
        if host != "127.0.0.1" or client.kafka_security_protocol != "SASL_SSL":
            raise ValueError("the secured broker serves SASL_SSL clients on 127.0.0.1 only")
        super().__init__(settings, port=int(port), controller_port=controller_port, home=home)
        self.ports.append(internal_port)
        self.internal_port = internal_port
        self.client = client
        self.tls = tls

    def render_config(self) -> str:
        """The broker's server.properties: SCRAM over TLS for clients, the rest as locally."""
        user = self.client.kafka_sasl_username
        password = self.client.kafka_sasl_password
        assert password is not None  # SASL_SSL settings have one
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=SECURED://127.0.0.1:{self.port},"
                f"INTERNAL://127.0.0.1:{self.internal_port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=SECURED://127.0.0.1:{self.port},"
                f"INTERNAL://127.0.0.1:{self.internal_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=INTERNAL",
                "listener.security.protocol.map="
                "SECURED:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"listener.name.secured.sasl.enabled.mechanisms={SCRAM},PLAIN",
                f"listener.name.secured.{SCRAM.lower()}.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.secured.plain.sasl.jaas.config="
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{user}="{password.get_secret_value()}";',
                "listener.name.secured.ssl.keystore.type=PEM",
                f"listener.name.secured.ssl.keystore.location={self.tls.keystore_file}",
                "listener.name.secured.ssl.client.auth=none",
                f"log.dirs={self.data_dir}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=3",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "auto.create.topics.enable=false",
                "num.partitions=1",
                "group.initial.rebalance.delay.ms=0",
                "log.message.timestamp.before.max.ms=9223372036854775807",
                "",
            ]
        )

    def _jvm(self, java: str) -> list[str]:
        """The local broker's JVM command, with the JIT's first tier only.

        Start-up is what this broker spends its time on (a few hundred messages follow):
        C1 alone roughly halves the storage tool's run and shortens the broker's start.
        """
        return [*super()._jvm(java), "-XX:TieredStopAtLevel=1"]

    def heap_options(self) -> list[str]:
        """A small heap: the test sends a few hundred messages."""
        return ["-Xms128m", "-Xmx512m"]

    def answers(self) -> bool:
        """Whether the broker answers a metadata request from an authenticated client."""
        if not port_is_open("127.0.0.1", self.port):
            return False
        return asyncio.run(broker_answers(self.client, timeout_s=3.0))

    def format_options(self) -> list[str]:
        """The client's SCRAM user, written into the metadata log at format time."""
        password = self.client.kafka_sasl_password
        assert password is not None  # SASL_SSL settings have one
        scram = (
            f"{SCRAM}=[name={self.client.kafka_sasl_username},"
            f"password={password.get_secret_value()}]"
        )
        return ["--add-scram", scram]


class SecuredRedis(LocalRedis):
    """redis-server reachable over TLS only, with the client settings' password.

    Args:
        client: Settings of a client of this server: ``rediss://127.0.0.1:port/0``, the
            password (``requirepass``) and the CA; readiness is checked with them.
        home: Where the config, data and log go.
        tls: The server's certificate.
    """

    name = "secured-redis"

    def __init__(self, client: Settings, *, home: Path, tls: Tls) -> None:
        port = urlsplit(client.redis_url).port
        if port is None or not client.redis_url.startswith("rediss://127.0.0.1:"):
            raise ValueError("the secured redis-server serves rediss://127.0.0.1:PORT only")
        super().__init__(client, port=port, home=home)
        self.tls = tls

    def template_values(self) -> dict[str, object]:
        """The local template's values, but no plaintext port: TLS is added after it."""
        return {**super().template_values(), "port": 0}

    def prepare(self) -> list[str]:
        """The local config (password, data, log), then a TLS port and its certificate."""
        command = super().prepare()
        with self.config_file.open("a") as config:
            config.write(
                "\n".join(
                    [
                        "",
                        f"tls-port {self.port}",
                        f"tls-cert-file {self.tls.cert_file}",
                        f"tls-key-file {self.tls.key_file}",
                        f"tls-ca-cert-file {self.tls.ca_file}",
                        "tls-auth-clients no",
                        "appendonly no",
                        'save ""',
                        "",
                    ]
                )
            )
        return command

    def answers(self) -> bool:
        """Whether the server answers PING over TLS with the password (the project's client)."""
        if not port_is_open("127.0.0.1", self.port):
            return False
        client = connect(self.settings)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()
