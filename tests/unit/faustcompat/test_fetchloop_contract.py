"""What streams.faustcompat.fetchloop mirrors and reads of Faust is still there, unchanged."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from pathlib import Path

import faust.transport._cython
import faust.transport.consumer
from faust.transport import conductor
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from upstream import assert_unchanged, unstarted_app, upstream_source

MIRRORED_IN = "streams/faustcompat/fetchloop.py (drain_messages)"


def test_fausts_fetch_loop_is_the_one_mirrored() -> None:
    assert_unchanged(
        faust.transport.consumer,
        "Consumer._drain_messages",
        "6b6a22fa66e689d5b143711bbd5e9de87805d95e141f0c7acd1a2f3140c7b213",
        MIRRORED_IN,
    )


def test_the_fetcher_runs_the_loop_looked_up_on_the_consumer() -> None:
    """Replacing the method on the class is enough: the fetcher looks it up per start."""
    source = upstream_source(faust.transport.consumer, "Fetcher._fetcher")
    assert "await consumer._drain_messages(self)" in source
    assert "_drain_messages" not in vars(faust_aiokafka.Consumer)  # not overridden
    assert list(inspect.signature(Consumer._drain_messages).parameters)[:2] == [
        "self",
        "fetcher",
    ]


def test_the_deliveries_reasoned_about_are_the_ones_mirrored() -> None:
    """`delivers_at_once` knows where a delivery can wait: in Faust's Python delivery
    (``ConductorCompiler.build``) and in the Cython one used when it is built."""
    where = "streams/faustcompat/fetchloop.py (delivers_at_once and the module docstring)"
    assert_unchanged(
        conductor,
        "ConductorCompiler.build",
        "a75956c797aaadabcba708b9f1b239d3c4760b563caf75145d04001b5828d82d",
        where,
    )
    assert_unchanged(
        conductor,
        "Conductor._compile_message_handler",
        "0d9c44f9ea20a65cef280ebd20e25eecc14a4cbb43b4ab2b4aafa223931b1598",
        where,
    )
    pyx = Path(faust.transport._cython.__file__).parent / "conductor.pyx"
    found = hashlib.sha256(pyx.read_bytes()).hexdigest()
    assert found == "dde1f974267881cf8c5f7e4fd2b114a2c6d754633a2aa9a2a2fc92f93e143dba", (
        f"{pyx} changed upstream (sha256 {found}): re-read ConductorHandler.__call__ "
        f"against {where}, then store the new digest here"
    )


async def test_the_conductor_keeps_its_index_and_lock() -> None:
    with unstarted_app("contract-conductor") as app:
        topics = app.topics
        assert isinstance(topics, conductor.Conductor)
        assert isinstance(topics._tp_to_callback_lock, asyncio.Lock)
        assert topics._tp_index == {}  # TP -> set of channels
    # Faust's delivery takes the lock while it rebuilds the index: the wait we avoid.
    source = upstream_source(conductor, "Conductor._compile_message_handler")
    assert "async with self._tp_to_callback_lock:" in source
    assert "self._tp_index" in upstream_source(conductor, "Conductor._update_tp_index")


async def test_the_consumer_members_the_loop_reads_are_there() -> None:
    with unstarted_app("contract-fetchloop") as app:
        consumer = app.consumer
        for name in ("_read_offset", "_commit_every", "_n_acked", "_stopped", "suspend_flow"):
            assert hasattr(consumer, name), name
        for name in ("_add_gap", "_get_active_partitions", "wait_first", "getmany", "commit"):
            assert callable(getattr(consumer, name)), name
        assert consumer._read_offset[object()] is None  # type: ignore[attr-defined]
