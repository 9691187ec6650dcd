"""The Faust application, built from the settings.

``create_app`` is the only place a ``faust.App`` is configured, so workers, tests and
benchmarks run the same app: broker and security options, Faust's web server off (the
worker serves its pages itself: ``streams.webserver``), consumer-group timeouts, the
default table store and the partition count of the topics Faust declares.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.auth import SASLCredentials, SSLCredentials

from streams.faustcompat import check_versions, fetchloop, fetchwait, idempotence, threadstop
from streams.faustcompat import records as tolerant_records
from streams.kafka import ssl_context
from streams.settings import Settings
from streams.tablestore.config import app_store_defaults
from streams.tablestore.table import Table


def broker_credentials(settings: Settings) -> Any:
    """Faust's credentials object for the configured Kafka security protocol, or None."""
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None  # checked by Settings
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=ssl_context(settings),
            mechanism=settings.kafka_sasl_mechanism,
        )
    if protocol == "SSL":
        return SSLCredentials(ssl_context(settings))
    return None


def create_app(settings: Settings, **overrides: Any) -> faust.App:
    """Build the fraudstream Faust app; ``overrides`` are extra Faust settings (tests).

    Raises:
        UnsupportedVersionError: The installed faust-streaming or aiokafka is not the
            version ``streams.faustcompat`` mirrors (a one-line message).
    """
    check_versions()
    worker_data = settings.local_dir / "worker-data"
    worker_data.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    options: dict[str, Any] = {
        "broker": [f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        "broker_credentials": broker_credentials(settings),
        "broker_session_timeout": settings.kafka_session_timeout_s,
        "broker_heartbeat_interval": settings.kafka_heartbeat_interval_s,
        "broker_commit_interval": settings.commit_interval_s,
        # Commit on the timer only. Faust's count-based commit (every 10,000 messages)
        # runs inside the loop that hands fetched messages to the streams, so each one
        # stalled every stream for a producer flush and a broker round trip.
        "broker_commit_every": 2**31 - 1,
        # Outputs go in record batches of up to this size (Faust's default, 16 KB, made
        # the scorer wait on the broker every 20 or so score records).
        "producer_max_batch_size": settings.producer_batch_bytes,
        "store": settings.table_store,
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication_factor,
        "topic_allow_declare": True,
        # Faust's aiohttp web server is off: it runs on the event loop, so it went silent
        # for a whole Redis outage, and it served every table's raw entries
        # (/table/<name>/<key>/). The worker's pages are served from threads instead
        # (streams.webserver). web_host and web_port still name the worker (Faust's
        # canonical URL); table views stay off for a caller that turns the server on.
        "web_enabled": False,
        "web_tables_enabled": False,
        "web_host": settings.web_host,
        "web_bind": settings.web_host,
        "web_port": settings.web_port,
        "datadir": str(worker_data / "{conf.name}"),
        "autodiscover": False,
        # Tables skip changelog sends when their redis:// store is the source of truth.
        "Table": Table,
        # A new consumer group reads a topic from its start: no transaction is skipped.
        "consumer_auto_offset_reset": "earliest",
    }
    if settings.table_store.startswith(("redis://", "rediss://")):
        # Every worker reads Redis: standby replicas of table partitions would be idle.
        options["table_standby_replicas"] = 0
    options.update(overrides)
    app = faust.App(settings.app_id, **options)
    # Faust hard-codes a 1.5 s fetch wait and 1-byte fetches (streams.faustcompat.fetchwait).
    fetchwait.use_fetch_limits(app, settings.fetch_max_wait_ms, settings.fetch_min_bytes)
    # No event-loop round per fetched message (streams.faustcompat.fetchloop).
    fetchloop.install()
    # A consumer thread stopped while it starts must not keep the process alive
    # (streams.faustcompat.threadstop).
    threadstop.install()
    # A header name that is not UTF-8 must not crash the fetcher (streams.faustcompat.records).
    tolerant_records.install()
    # A batch resent after a broker restart is not written twice (streams.faustcompat.idempotence).
    idempotence.install()
    # Read by redis:// table stores: the key namespace, password and CA from these
    # settings, so the password never has to appear in a store URL (Faust logs those).
    app.redis_store_defaults = app_store_defaults(settings)  # type: ignore[attr-defined]
    return app
