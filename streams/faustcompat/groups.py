"""Delete consumer groups, which aiokafka's admin client has no call for.

Upstream: aiokafka 0.14.0, ``aiokafka/admin/client.py``,
``AIOKafkaAdminClient._send_request_to_node(node_id, request)``: waits until the node
is ready and sends one request to it, as the admin client's public calls do. With the
public ``find_coordinator`` and aiokafka's ``DeleteGroupsRequest``
(``aiokafka/protocol/admin.py``), it deletes a group at its coordinator. Used by the
benchmarks' cleanup (``bench/run_cleanup.py``).
``tests/unit/faustcompat/test_groups_contract.py`` fails when one of them changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka.protocol.admin import DeleteGroupsRequest


async def delete_consumer_groups(admin: Any, groups: Iterable[str]) -> None:
    """Delete ``groups`` with the started ``AIOKafkaAdminClient`` ``admin``, one by one."""
    for group in groups:
        coordinator = await admin.find_coordinator(group)
        await admin._send_request_to_node(coordinator, DeleteGroupsRequest([group]))
