"""Local Kafka and Redis for development and tests (deploy/local): start, stop, status.

Both services bind to 127.0.0.1 only and keep their jars, data and logs under the
settings' ``local_dir`` (``.local/`` in a checkout, git-ignored).
"""

from __future__ import annotations

from typing import Literal

from streams.localinfra.kafka import LocalKafka
from streams.localinfra.process import ServiceError
from streams.localinfra.redis import LocalRedis
from streams.localinfra.service import LocalService, ServiceStatus
from streams.settings import Settings

ServiceName = Literal["kafka", "redis"]

__all__ = [
    "LocalKafka",
    "LocalRedis",
    "LocalService",
    "ServiceError",
    "ServiceName",
    "ServiceStatus",
    "local_services",
]


def local_services(settings: Settings, only: ServiceName | None = None) -> list[LocalService]:
    """The local services, Kafka first (start order; stop goes in reverse)."""
    services: list[LocalService] = [LocalKafka(settings), LocalRedis(settings)]
    return [s for s in services if only is None or s.name == only]
