"""Read and set a topic's configs on the broker, as an operator's admin client does."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.kafka import client_options
from streams.settings import Settings

#: ``config_source`` of a config set on the topic itself (DescribeConfigs v1 and later).
TOPIC_CONFIG_SOURCE = 1


async def topic_configs(settings: Settings, topic: str, *, own: bool = False) -> dict[str, str]:
    """The topic's configs: all of them, or with ``own`` only those set on the topic."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        response = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs=None)]
        )
    finally:
        await admin.close()
    # Each entry: (name, value, read_only, config_source, is_sensitive, synonyms).
    return {
        entry[0]: entry[1]
        for entry in response[0].resources[0][4]
        if not own or (entry[3] == TOPIC_CONFIG_SOURCE and entry[1] is not None)
    }


async def set_topic_configs(settings: Settings, topic: str, configs: dict[str, str]) -> None:
    """Replace the configs set on the topic (AlterConfigs sets the whole set)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        await admin.close()
