"""aiokafka's admin request path, which streams.faustcompat.groups uses to delete groups."""

from __future__ import annotations

import inspect

import aiokafka.admin.client
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DeleteGroupsRequest, DeleteGroupsRequest_v1
from upstream import upstream_source

from streams.faustcompat import groups


def test_the_admin_client_still_lacks_a_delete_and_sends_to_one_node() -> None:
    """If aiokafka gains ``delete_consumer_groups``, use it and drop the module."""
    assert not hasattr(AIOKafkaAdminClient, "delete_consumer_groups")
    send = AIOKafkaAdminClient._send_request_to_node
    assert inspect.iscoroutinefunction(send)
    assert list(inspect.signature(send).parameters) == ["self", "node_id", "request"]
    assert "return await self._client.send(node_id, request)" in upstream_source(
        aiokafka.admin.client, "AIOKafkaAdminClient._send_request_to_node"
    )
    assert list(inspect.signature(AIOKafkaAdminClient.find_coordinator).parameters)[:2] == [
        "self",
        "group_id",
    ]
    request = DeleteGroupsRequest(["group"]).build(DeleteGroupsRequest_v1)
    assert request.groups_names == ["group"]


async def test_each_group_is_deleted_at_its_coordinator() -> None:
    sent: list[tuple[int, list[str]]] = []

    class Admin:
        async def find_coordinator(self, group_id: str) -> int:
            return len(group_id)

        async def _send_request_to_node(self, node_id: int, request: DeleteGroupsRequest) -> None:
            sent.append((node_id, request.build(DeleteGroupsRequest_v1).groups_names))

    await groups.delete_consumer_groups(Admin(), ["a", "bb"])
    assert sent == [(1, ["a"]), (2, ["bb"])]
