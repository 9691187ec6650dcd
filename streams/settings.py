"""The one settings object of fraudstream.

Every knob of the product lives here, read from environment variables prefixed with
``FRAUDSTREAM_`` (for example ``FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS``), from a ``.env``
file in the working directory, or from CLI options that override both. The object is
frozen: code that needs a variation builds a new one with ``model_copy(update=...)``, so a
running worker never sees its configuration change under it.

Secrets (the Kafka SASL password, the Redis password) are ``SecretStr`` and never appear
in ``repr``, logs or ``fraudstream settings``. A password embedded in the Redis URL is
refused for the same reason: it would leak wherever the URL is shown.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "FRAUDSTREAM_"
#: Variables under this prefix are the notebooks' parameters, not settings.
NOTEBOOK_ENV_PREFIX = "FRAUDSTREAM_NB_"

#: The repository root when fraudstream runs from a checkout (an editable install).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Redis puts a cluster node's bus on its port + 10000: the last of three nodes must fit.
CLUSTER_BUS_OFFSET = 10_000
MAX_CLUSTER_PORT = 65_535 - CLUSTER_BUS_OFFSET - 2

#: The local Kafka cluster's nodes, and the ports they take from local_kafka_cluster_port
#: on: a client port per node, then a controller port per node.
KAFKA_CLUSTER_NODES = 3
MAX_KAFKA_CLUSTER_PORT = 65_535 - 2 * KAFKA_CLUSTER_NODES + 1

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class Settings(BaseSettings):
    """Configuration of every fraudstream component: clients, topics, stores, local infra."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    # --- identity -------------------------------------------------------------------
    app_id: str = Field(
        "fraudstream",
        description="Faust application id: the consumer group and the prefix of internal topics.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    )

    # --- Kafka ----------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "",
        description="Comma-separated host:port list; empty means the local broker "
        "(127.0.0.1:local_kafka_port).",
    )
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT",
        description="How the Kafka clients connect: TLS with SSL and SASL_SSL, SASL "
        "authentication with SASL_PLAINTEXT and SASL_SSL (which need the SASL mechanism, "
        "user name and password).",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism | None = Field(
        None, description="SASL mechanism of the SASL security protocols."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")
    kafka_session_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Consumer group session timeout: a dead worker is noticed "
        "within this time and its partitions move.",
    )
    kafka_heartbeat_interval_s: float = Field(
        3.0,
        gt=0,
        description="Consumer heartbeat interval (a third of the session timeout or less).",
    )

    # --- topics ---------------------------------------------------------------------
    topic_prefix: str = Field(
        "", description="Prepended to every topic name (tests use it to keep runs apart)."
    )
    topic_transactions: str = Field(
        "transactions", description="Topic of the transactions (key customer_id)."
    )
    topic_fraud_reports: str = Field(
        "fraud-reports", description="Topic of the fraud reports (key terminal_id)."
    )
    topic_alerts: str = Field(
        "alerts", description="Topic the workers send alerts to (key customer_id)."
    )
    topic_scores: str = Field("scores", description="Topic of the score records (see emit_scores).")
    topic_dlq: str = Field(
        "transactions-dlq",
        description="Dead-letter topic: bad input, with its original bytes and headers "
        "and the reason.",
    )
    topic_model_control: str = Field(
        "model-control",
        description="Topic of model promotions, read in full by every worker.",
    )
    topic_transactions_by_terminal: str = Field(
        "transactions-by-terminal",
        description="Valid transactions re-keyed by terminal_id, for the terminal agents.",
    )
    topic_partitions: int = Field(
        6,
        ge=1,
        description="Partitions of every topic fraudstream declares; the most "
        "workers that can share the load.",
    )
    topic_replication_factor: int = Field(
        1, ge=1, description="Replication factor of every topic fraudstream declares."
    )

    # --- Redis ----------------------------------------------------------------------
    redis_url: str = Field(
        "",
        description="redis:// or rediss:// URL without a password; empty means the local "
        "redis-server (redis://127.0.0.1:local_redis_port/0).",
    )
    redis_password: SecretStr | None = Field(
        None,
        description="Redis AUTH password, for redis_url and the table store (refused "
        "inside the URL).",
    )
    redis_ssl_cafile: Path | None = Field(
        None,
        description="CA bundle to verify a rediss:// server (redis_url and the table "
        "store) signed by a private CA; unset means the system's CAs.",
    )
    redis_key_prefix: str = Field(
        "fraudstream", description="Namespace of every key fraudstream writes to Redis."
    )

    # --- tables, models, web --------------------------------------------------------
    table_store: str = Field(
        "",
        description="Faust table store URL for the feature tables; empty means redis:// "
        "at redis_url (the live pipeline needs Redis: scorers read terminal state "
        "written by other workers).",
    )
    model_registry_dir: Path = Field(
        Path("model-registry"), description="Directory holding versioned model artifacts."
    )
    model_retry_interval_s: float = Field(
        60.0,
        gt=0,
        description="While the newest promoted model does not load on a worker (it scores "
        "with an older one, or none), the worker tries that version again this often: an "
        "artifact repaired in the registry is picked up without a promotion or a restart.",
    )
    web_host: str = Field("127.0.0.1", description="Address of the worker's web server.")
    web_port: int = Field(
        6066,
        ge=1,
        le=65535,
        description="Port of the worker's web server: /health, /ready, /metrics.",
    )

    # --- the live pipeline ----------------------------------------------------------
    batch_max: int = Field(
        500,
        ge=1,
        description="Most records per micro-batch (one feature read, one predict_proba). An "
        "agent takes what the consumer has fetched, up to this many, without waiting to "
        "fill a batch: a quiet stream pays no batching delay.",
    )
    commit_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often a worker commits: table state to Redis with the offsets it "
        "covers. Terminal state becomes visible to other workers' scorers at this pace.",
    )
    partition_stall_after_s: float = Field(
        60.0,
        gt=0,
        description="A partition with a backlog that has not moved for this long is "
        "reported stalled: an ERROR line and the fraudstream_partition_stalled gauge.",
    )
    fetch_max_wait_ms: int = Field(
        5,
        ge=1,
        le=1500,
        description="Longest a worker's fetch request waits at the broker for "
        "FRAUDSTREAM_FETCH_MIN_BYTES of new data: what a record of a quiet stream waits "
        "at most. aiokafka fetches only partitions whose fetched records were all "
        "consumed, one request at a time, so a request holding only quiet partitions "
        "(fraud reports) holds back the busy ones until it returns: Faust's fixed 1,500 "
        "ms made multi-second backlogs at a few thousand transactions a second. A live "
        "stream's fetches end on this wait (see FRAUDSTREAM_FETCH_MIN_BYTES), and each "
        "costs CPU whether records came or not: at 50 transactions a second a worker took 37 % "
        "of a core with 5 ms and 20 % with 20 ms, for alert latencies (p50/p99) of 9/17 "
        "and 14/26 ms (bench_pipeline, one run each). A fleet idle most of the day may "
        "take the longer wait.",
    )
    fetch_min_bytes: int = Field(
        65_536,
        ge=1,
        le=1_048_576,
        description="Data a worker's fetch request waits for at the broker (or "
        "FRAUDSTREAM_FETCH_MAX_WAIT_MS, whichever comes first). Every fetch costs the "
        "worker a fixed share of CPU, so fetches ended early by a few records cost it "
        "throughput: with 1 byte, aiokafka's default, a worker took 71 % of a core at "
        "1,000 transactions a second (52 % with 4,096 bytes); at 3,500 transactions a "
        "second, 4,096 bytes let it fall behind (alert latency p50 0.9-2.4 s, p99 "
        "1.6-3.7 s, three runs) where 65,536 bytes, whose live fetches end on the wait, "
        "kept up (p50 100-176 ms, p99 0.5-0.8 s). At 50 and 1,500 transactions a second "
        "the two gave the same latency (bench_pipeline, 2-core machine shared with the "
        "broker and Redis). A backlog's fetches come back full either way.",
    )
    producer_batch_bytes: int = Field(
        524_288,
        ge=16_384,
        le=1_000_000,
        description="Most bytes of one record batch a worker's producer sends to a partition "
        "(the records waiting for it go together in one produce request). Faust's 16,384 made "
        "the scorer wait on the broker once every 20 or so score records, each wait a round "
        "trip, and spent a produce request on each 16 KB: with score records on, a worker "
        "scored 3,612 transactions a second at 265 us of CPU each, against 6,204 at 163 us "
        "with 524,288 (bench_pipeline, one worker, 6 partitions, same machine). A worker "
        "whose topics take less (max.message.bytes; 1 MiB by default) sends smaller batches "
        "and logs it at start.",
    )
    emit_scores: bool = Field(
        False,
        description="Send a score record with its features for every transaction (the "
        "scores topic: monitoring, audits, feature logging). Off by default: it doubles "
        "what a worker produces, measured at about a quarter of its CPU.",
    )
    alert_reasons: int = Field(3, ge=0, le=20, description="Reasons listed on each alert.")
    max_event_bytes: int = Field(
        65_536, ge=1024, description="Larger input messages go to the dead-letter topic."
    )
    max_event_time_ahead_s: int = Field(
        300,
        ge=0,
        description="Events timed further ahead of the worker's clock are dead-lettered "
        "(future_event): no payment happens in the future, and one such event would move "
        "its card's and terminal's clocks ahead of every real one.",
    )
    log_level: Literal["debug", "info", "warn", "error", "crit"] = Field(
        "info", description="Log level of every fraudstream process."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text: one line per record for people; json: one JSON object per "
        "line (exceptions inside it) for log collectors.",
    )
    otlp_endpoint: str = Field(
        "",
        description="OTLP/HTTP collector the worker exports its traces to (http://host:4318, "
        "or the full .../v1/traces URL): one span per agent micro-batch, linked to the "
        "traceparent of its inputs. Empty: tracing off, OpenTelemetry not even imported.",
    )
    watermark_wait_max_s: float = Field(
        30.0,
        gt=0,
        description="Longest the scorer holds a transaction back until the terminal agents "
        "have applied what its terminal features read (its watermarks), counted while Kafka "
        "and Redis answer; then it is scored with what is there and counted in "
        "fraudstream_terminal_reads_inexact_total.",
    )
    progress_log_interval_s: float = Field(
        60.0,
        gt=0,
        description="While a worker scores, one INFO line this often: transactions/s, "
        "alerts, dead letters and consumer lag over the interval.",
    )
    table_census_interval_s: float = Field(
        300.0,
        ge=0,
        description="How often each worker counts its table partitions' entries and "
        "bytes in Redis (fraudstream_table_stored_entries, _bytes): a SCAN of the whole "
        "keyspace, in a thread. 0 turns it off (a Redis of tens of millions of keys).",
    )
    loop_stuck_after_s: float = Field(
        60.0,
        gt=0,
        description="/health answers 503 once the worker's event loop has not turned for "
        "this long and no Redis or Kafka outage explains it.",
    )

    # --- local infrastructure (deploy/local) ----------------------------------------
    local_dir: Path = Field(
        PROJECT_ROOT / ".local",
        description="Where the local broker and redis-server keep jars, data and logs.",
    )
    local_kafka_version: str = Field(
        "4.4.0",
        pattern=r"^\d+\.\d+\.\d+$",
        description="Apache Kafka version of the local broker, whose jars `infra up` "
        "resolves with mvn.",
    )
    local_kafka_port: int = Field(
        9092,
        ge=1,
        le=65535,
        description="Client port of the local broker (kafka_bootstrap_servers follows it "
        "unless set).",
    )
    local_kafka_controller_port: int = Field(
        9093, ge=1, le=65535, description="KRaft controller port of the local broker."
    )
    local_kafka_heap: str = Field(
        "1g", pattern=r"^\d+[mg]$", description="Largest JVM heap (-Xmx) of the local broker."
    )
    local_redis_port: int = Field(
        6379,
        ge=1,
        le=65535,
        description="Port of the local redis-server (redis_url follows it unless set).",
    )
    local_redis_cluster_port: int = Field(
        7000,
        ge=1,
        le=MAX_CLUSTER_PORT,
        description="First of the three ports of the local Redis Cluster (`fraudstream infra "
        "up --only redis-cluster`); each node's cluster bus listens 10000 above its port.",
    )
    local_kafka_cluster_port: int = Field(
        9192,
        ge=1,
        le=MAX_KAFKA_CLUSTER_PORT,
        description="First of the six ports of the local three-broker Kafka cluster "
        "(`fraudstream infra up --only kafka-cluster`): nodes 1-3 take client ports P, "
        "P+1, P+2 and controller ports P+3, P+4, P+5.",
    )
    local_kafka_cluster_heap: str = Field(
        "512m",
        pattern=r"^\d+[mg]$",
        description="Heap of each local Kafka cluster node (three JVMs: smaller than "
        "local_kafka_heap).",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url_has_no_password(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"redis_url must start with redis://, rediss:// or unix://, got {parts.scheme!r}"
            )
        if parts.password:
            raise ValueError(
                "redis_url must not embed a password; set FRAUDSTREAM_REDIS_PASSWORD instead"
            )
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_endpoint_is_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ValueError(f"otlp_endpoint must be an http:// or https:// URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _fill_local_defaults(self) -> Settings:
        """Point empty client addresses at the local services, ports included."""
        if not self.kafka_bootstrap_servers:
            object.__setattr__(
                self, "kafka_bootstrap_servers", f"127.0.0.1:{self.local_kafka_port}"
            )
        if not self.redis_url:
            object.__setattr__(self, "redis_url", f"redis://127.0.0.1:{self.local_redis_port}/0")
        if not self.table_store:
            object.__setattr__(self, "table_store", self.redis_url)
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"kafka_security_protocol={self.kafka_security_protocol} needs "
                "kafka_sasl_mechanism, kafka_sasl_username and kafka_sasl_password"
            )
        if self.kafka_heartbeat_interval_s * 3 > self.kafka_session_timeout_s:
            raise ValueError(
                "kafka_heartbeat_interval_s must be at most a third of kafka_session_timeout_s"
            )
        if self.local_kafka_port == self.local_kafka_controller_port:
            raise ValueError("local_kafka_port and local_kafka_controller_port must differ")
        self._check_cluster_ports()
        self._check_kafka_cluster_ports()
        return self

    def _check_cluster_ports(self) -> None:
        """The local cluster's ports (nodes and buses) must not be the other services'."""
        first = self.local_redis_cluster_port
        bus = first + CLUSTER_BUS_OFFSET
        cluster = {*range(first, first + 3), *range(bus, bus + 3)}
        others = {
            "local_kafka_port": self.local_kafka_port,
            "local_kafka_controller_port": self.local_kafka_controller_port,
            "local_redis_port": self.local_redis_port,
        }
        taken = [name for name, port in others.items() if port in cluster]
        if taken:
            raise ValueError(
                f"local_redis_cluster_port={first} takes ports {first}-{first + 2} (cluster "
                f"buses {bus}-{bus + 2}), which collide with {', '.join(taken)}"
            )

    def _check_kafka_cluster_ports(self) -> None:
        """The local Kafka cluster's six ports must not be any other local service's."""
        first = self.local_kafka_cluster_port
        last = first + 2 * KAFKA_CLUSTER_NODES - 1
        redis_bus = self.local_redis_cluster_port + CLUSTER_BUS_OFFSET
        others = {
            "local_kafka_port": {self.local_kafka_port},
            "local_kafka_controller_port": {self.local_kafka_controller_port},
            "local_redis_port": {self.local_redis_port},
            "local_redis_cluster_port": {
                *self.local_redis_cluster_ports,
                *range(redis_bus, redis_bus + 3),
            },
        }
        taken = [name for name, ports in others.items() if ports & set(range(first, last + 1))]
        if taken:
            raise ValueError(
                f"local_kafka_cluster_port={first} takes ports {first}-{last} (clients and "
                f"controllers of {KAFKA_CLUSTER_NODES} nodes), which collide with "
                f"{', '.join(taken)}"
            )

    @property
    def local_redis_cluster_ports(self) -> list[int]:
        """The client ports of the three local Redis Cluster nodes."""
        return [self.local_redis_cluster_port + i for i in range(3)]

    @property
    def local_redis_cluster_url(self) -> str:
        """The table store URL of the local Redis Cluster (any node leads to all)."""
        return f"redis://127.0.0.1:{self.local_redis_cluster_port}/0?cluster=true"

    @property
    def local_kafka_cluster_ports(self) -> list[int]:
        """The client ports of the local Kafka cluster's nodes 1, 2, 3."""
        return [self.local_kafka_cluster_port + i for i in range(KAFKA_CLUSTER_NODES)]

    @property
    def local_kafka_cluster_controller_ports(self) -> list[int]:
        """The controller (KRaft quorum) ports of the local Kafka cluster's nodes 1, 2, 3."""
        first = self.local_kafka_cluster_port + KAFKA_CLUSTER_NODES
        return [first + i for i in range(KAFKA_CLUSTER_NODES)]

    @property
    def local_kafka_cluster_bootstrap(self) -> str:
        """The bootstrap servers of the local Kafka cluster: every node."""
        return ",".join(f"127.0.0.1:{port}" for port in self.local_kafka_cluster_ports)

    def topic(self, name: str) -> str:
        """Return the full topic name for a logical name, with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    @property
    def topic_names(self) -> dict[str, str]:
        """Every topic fraudstream declares, by role, with the prefix applied."""
        return {
            "transactions": self.topic(self.topic_transactions),
            "fraud_reports": self.topic(self.topic_fraud_reports),
            "alerts": self.topic(self.topic_alerts),
            "scores": self.topic(self.topic_scores),
            "dlq": self.topic(self.topic_dlq),
            "model_control": self.topic(self.topic_model_control),
            "transactions_by_terminal": self.topic(self.topic_transactions_by_terminal),
        }

    @property
    def kafka_uses_tls(self) -> bool:
        """Whether the Kafka clients must speak TLS."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def as_env(self) -> dict[str, str]:
        """Every setting as a ``FRAUDSTREAM_*`` variable, secrets in clear.

        For child processes that must see exactly these settings (the demo's worker,
        tests); never log the result.
        """
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            secret = getattr(value, "get_secret_value", None)
            env[env_var(name)] = str(secret() if secret else value)
        return env

    def public_view(self) -> dict[str, object]:
        """Every setting as plain values, secrets masked: safe to print or log."""
        view: dict[str, object] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                view[name] = "**********" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                view[name] = str(value)
            else:
                view[name] = value
        return view


def env_var(field_name: str) -> str:
    """Return the environment variable that sets a field, for messages and docs."""
    if field_name not in Settings.model_fields:
        raise KeyError(field_name)
    return f"{ENV_PREFIX}{field_name.upper()}"


def unknown_env_vars(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``FRAUDSTREAM_*`` variables that set nothing, each with the setting it may mean.

    pydantic-settings reads only the variables of known fields, so a misspelt one
    (``FRAUDSTREAM_BATCH_MAXX``) is ignored and the worker runs on the default, with
    nothing to say so. The commands log these at start. Variables are matched as
    pydantic-settings matches them: case-insensitively. The notebooks' parameters
    (``FRAUDSTREAM_NB_*``) are not settings and are left alone.

    Returns:
        ``(variable, closest setting's variable or None)``, sorted by variable.
    """
    known = [env_var(name) for name in Settings.model_fields]
    unknown = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(NOTEBOOK_ENV_PREFIX):
            continue
        if upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.8)
        unknown.append((name, close[0] if close else None))
    return unknown
