"""streams.tablestore.refusal: refused partitions stay paused whatever Faust resumes."""

from __future__ import annotations

from collections.abc import Iterable

from faust.types import TP

from streams.tablestore import refusal

A, B, C = TP("transactions", 0), TP("transactions", 1), TP("transactions", 2)


class Consumer:
    """The pause/resume bookkeeping of Faust's consumer."""

    def __init__(self, assigned: set[TP]) -> None:
        self.active = set(assigned)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        self.active.difference_update(tps)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        self.active.update(tps)


def test_a_refused_partition_is_paused_and_stays_paused_through_resumes() -> None:
    consumer = Consumer({A, B, C})
    refusal.install(consumer)
    assert refusal.refuse(consumer, {B}) == {B}
    assert consumer.active == {A, C}
    consumer.pause_partitions({A, B, C})  # a rebalance pauses everything...
    consumer.resume_partitions({A, B, C})  # ...and resumes everything assigned
    assert consumer.active == {A, C}
    assert refusal.refused(consumer) == {B}


def test_refusing_again_reports_only_new_partitions() -> None:
    consumer = Consumer({A, B})
    assert refusal.refuse(consumer, {A}) == {A}  # installs on first use
    assert refusal.refuse(consumer, {A, B}) == {B}
    assert consumer.active == set()


def test_installing_twice_wraps_once() -> None:
    consumer = Consumer({A})
    refusal.install(consumer)
    wrapped = consumer.resume_partitions
    refusal.install(consumer)
    assert consumer.resume_partitions is wrapped


def test_a_released_partition_is_resumed_by_the_next_resume() -> None:
    consumer = Consumer({A, B})
    refusal.refuse(consumer, {A})
    assert refusal.release(consumer, {A, C}) == {A}
    assert consumer.active == {B}  # still paused until Faust resumes it
    consumer.resume_partitions({A, B})
    assert consumer.active == {A, B}


def test_nothing_is_refused_before_install() -> None:
    assert refusal.refused(Consumer({A})) == set()
