"""What streams.faustcompat.rawbatches replaces, mirrors and reads of Faust is still there."""

from __future__ import annotations

import hashlib
from pathlib import Path

import faust._cython
import faust.app.base
import faust.streams
import faust.topics
import faust.transport.consumer
from faust.transport import conductor
from mode.utils import queues
from upstream import assert_unchanged, unstarted_app, upstream_source

WHERE = "streams/faustcompat/rawbatches.py"


def test_the_acknowledgement_mirrored_is_fausts() -> None:
    """`acknowledge` is ``Consumer.ack``'s body for a batch: re-read it when that changes."""
    assert_unchanged(
        faust.transport.consumer,
        "Consumer.ack",
        "582909f08d74616b0302ff087ca167e023e09f9a441e3cc88c2e480f21df164b",
        f"{WHERE} (acknowledge)",
    )


def test_the_stream_machinery_replaced_is_the_one_reasoned_about() -> None:
    """Tracking, dropping stale records and acking after the batch come from these."""
    assert_unchanged(
        faust.streams,
        "Stream.take_events",
        "c9a22829c53f231164aa7025bf7818d15d11be898d731e8f8556b1ec389b0bef",
        f"{WHERE} (RawBatches.batches)",
    )
    assert_unchanged(
        faust.transport.consumer,
        "Consumer.track_message",
        "68b2ee2f2fcbf47487a481d9cb8c5a2d3b662a5e3b4d1aa053ee504a35a1d3a5",
        f"{WHERE} (RawBatches._take)",
    )
    pyx = Path(faust._cython.__file__).parent / "streams.pyx"
    found = hashlib.sha256(pyx.read_bytes()).hexdigest()
    assert found == "0041622f4a251188f53d73e6d51d18d16f0f427512df1e96c043cfdeea4c3250", (
        f"{pyx} changed upstream (sha256 {found}): re-read StreamIterator._prepare_event "
        f"and after against {WHERE}, then store the new digest here"
    )


def test_the_delivery_replaced_and_its_back_pressure_are_the_ones_mirrored() -> None:
    assert_unchanged(
        conductor,
        "ConductorCompiler.build",
        "a75956c797aaadabcba708b9f1b239d3c4760b563caf75145d04001b5828d82d",
        f"{WHERE} (RawBatches.accepts, put)",
    )
    assert_unchanged(
        faust.transport.consumer,
        "Consumer.on_buffer_full",
        "db7cc809ec3075f8b366037a9a2d244f518f9819bdf2a688db3f8af9d155c035",
        f"{WHERE} (RawBatches.put)",
    )
    assert_unchanged(
        faust.transport.consumer,
        "Consumer.on_buffer_drop",
        "0bbeaf64270b4a6d73586369648dc38615b04fd35e7960a31a60a288bfc447f0",
        f"{WHERE} (RawBatches._resume_fetching)",
    )


def test_subscribing_by_iterating_the_channel_is_fausts_way() -> None:
    """`RawBatches.batches` iterates the agent's channel to subscribe to its topic."""
    source = upstream_source(faust.topics, "Topic.__aiter__")
    assert "self.app.topics.add(" in source


def test_a_rebalance_clears_the_queues_flow_control_manages() -> None:
    assert_unchanged(
        queues,
        "FlowControlEvent.clear",
        "a05004862c3967cc08568d320c7f4049df2b5af31fb604a801c021ea4f9c60d8",
        f"{WHERE} (RawBatches.clear)",
    )
    assert "self._queues.add(queue)" in upstream_source(queues, "FlowControlEvent.manage_queue")
    revoked = upstream_source(faust.app.base, "App._on_partitions_revoked")
    assert "self.flow_control.suspend" in revoked
    assert "self.flow_control.clear" in revoked
    assert "_consumer_wait_empty" in revoked


def test_a_rebalance_waits_for_the_unacked_records() -> None:
    source = upstream_source(faust.transport.consumer, "Consumer.wait_empty")
    assert "self._unacked_messages" in source


async def test_the_consumer_and_app_members_read_are_there() -> None:
    with unstarted_app("contract-rawbatches") as app:
        consumer = app.consumer
        for name in (
            "_unacked_messages",
            "_acked",
            "_acked_index",
            "_committed_offset",
            "_n_acked",
            "_waiting_for_ack",
            "suspend_flow",
            "on_buffer_full",
            "on_buffer_drop",
        ):
            assert hasattr(consumer, name), name
        assert hasattr(app, "consumer_generation_id")
        for name in ("is_active", "manage_queue", "acquire"):
            assert hasattr(app.flow_control, name), name
        buffer = app.producer.buffer
        for name in ("size", "max_messages", "wait_until_ebb"):
            assert hasattr(buffer, name), name
