"""Local Kafka and Redis for development and tests (deploy/local): start, stop, status.

The services bind to 127.0.0.1 only and keep their jars, data and logs under the
settings' ``local_dir`` (``.local/`` in a checkout, git-ignored). A three-master Redis
Cluster is there too, for the store's cluster mode, and a three-broker Kafka cluster, for
fault tolerance tests, but each only when asked for by name (``only="redis-cluster"``,
``only="kafka-cluster"``): the default set, what ``fraudstream infra up`` and the tests
start, is Kafka and the single redis-server.
"""

from __future__ import annotations

from typing import Literal

from streams.localinfra.kafka import LocalKafka
from streams.localinfra.kafkacluster import LocalKafkaCluster, LocalKafkaClusterNode
from streams.localinfra.process import ServiceError
from streams.localinfra.redis import LocalRedis
from streams.localinfra.rediscluster import LocalRedisCluster, LocalRedisClusterNode
from streams.localinfra.service import LocalService, ServiceStatus
from streams.settings import Settings

ServiceName = Literal["kafka", "redis", "redis-cluster", "kafka-cluster"]

__all__ = [
    "LocalKafka",
    "LocalKafkaCluster",
    "LocalKafkaClusterNode",
    "LocalRedis",
    "LocalRedisCluster",
    "LocalRedisClusterNode",
    "LocalService",
    "ServiceError",
    "ServiceName",
    "ServiceStatus",
    "local_services",
]


def local_services(settings: Settings, only: ServiceName | None = None) -> list[LocalService]:
    """The local services, Kafka first (start order; stop goes in reverse).

    Without ``only``: Kafka and the single redis-server, never the Redis Cluster or the
    Kafka cluster, which are started only by name.
    """
    if only == "redis-cluster":
        return [LocalRedisCluster(settings)]
    if only == "kafka-cluster":
        return [LocalKafkaCluster(settings)]
    services: list[LocalService] = [LocalKafka(settings), LocalRedis(settings)]
    return [s for s in services if only is None or s.name == only]
