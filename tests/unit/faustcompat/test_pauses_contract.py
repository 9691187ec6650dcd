"""Faust's resume of partitions, which streams.faustcompat.pauses filters."""

from __future__ import annotations

import inspect

import faust.tables.recovery
import faust.transport.consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from upstream import unstarted_app, upstream_source

from streams.faustcompat import pauses

A, B = TP("transactions", 0), TP("transactions", 1)


def test_resume_partitions_keeps_its_shape_and_faust_calls_it_on_the_instance() -> None:
    resume = faust_aiokafka.Consumer.resume_partitions
    assert list(inspect.signature(resume).parameters) == ["self", "tps"]
    assert "resume_partitions" not in vars(faust_aiokafka.Consumer)  # the base's
    source = upstream_source(faust.transport.consumer, "Consumer.resume_partitions")
    assert "self._get_active_partitions().update(tps)" in source
    recovery = inspect.getsource(faust.tables.recovery)
    # Every resume of the recovery goes through the consumer instance's attribute.
    assert recovery.count("consumer.resume_partitions") == recovery.count("resume_partitions")
    assert "consumer.resume_partitions(" in upstream_source(
        faust.tables.recovery, "Recovery.on_recovery_completed"
    )


async def test_a_kept_partition_stays_paused_through_fausts_own_resume() -> None:
    with unstarted_app("contract-pauses") as app:
        consumer = app.consumer
        active = consumer._get_active_partitions()  # type: ignore[attr-defined]
        kept: set[TP] = {B}
        pauses.keep_paused(consumer, kept)
        consumer.resume_partitions({A, B})
        assert active >= {A}
        assert B not in active
        kept.clear()
        consumer.resume_partitions({B})
        assert B in active
