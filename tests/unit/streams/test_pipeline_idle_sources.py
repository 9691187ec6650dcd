"""When a source partition counts as idle (streams.pipeline.watermarks.IdleSources)."""

from __future__ import annotations

from streams.pipeline.watermarks import IdleSources


def test_a_source_is_idle_only_after_staying_at_its_end() -> None:
    idle = IdleSources(lambda: False, idle_after_s=10.0)
    assert not idle.observe(0, at_end=True, now=100.0)
    assert not idle.observe(0, at_end=True, now=109.9)
    assert idle.observe(0, at_end=True, now=110.0)
    # Events again: the wait starts over.
    assert not idle.observe(0, at_end=False, now=111.0)
    assert not idle.observe(0, at_end=True, now=112.0)
    assert idle.observe(0, at_end=True, now=122.0)
    # Partitions wait on their own.
    assert not idle.observe(1, at_end=True, now=122.0)


def test_no_source_is_idle_during_a_kafka_outage_nor_soon_after() -> None:
    down = True
    idle = IdleSources(lambda: down, idle_after_s=10.0)
    assert not idle.observe(0, at_end=True, now=0.0)
    assert not idle.observe(0, at_end=True, now=50.0)  # however long it lasts
    down = False
    assert not idle.observe(0, at_end=True, now=51.0)  # the wait starts when it ends
    assert not idle.observe(0, at_end=True, now=60.0)
    assert idle.observe(0, at_end=True, now=61.0)


def test_a_failed_reading_restarts_every_wait() -> None:
    idle = IdleSources(lambda: False, idle_after_s=10.0)
    idle.observe(0, at_end=True, now=0.0)
    idle.reset()
    assert not idle.observe(0, at_end=True, now=10.0)
    assert idle.observe(0, at_end=True, now=20.0)
