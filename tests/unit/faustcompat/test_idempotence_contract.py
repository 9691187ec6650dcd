"""Faust builds its producers from ``_settings_extra``, which idempotence replaces."""

from __future__ import annotations

import faust.transport.drivers.aiokafka as faust_aiokafka
from upstream import upstream_source

from streams.app import create_app
from streams.faustcompat import idempotence
from streams.settings import Settings


def test_faust_asks_for_idempotence_only_in_a_transaction() -> None:
    source = upstream_source(faust_aiokafka, "Producer._settings_extra")
    assert "if self.app.in_transaction:" in source
    assert 'return {"acks": "all", "enable_idempotence": True}' in source
    assert "return {}" in source


def test_faust_merges_the_extra_settings_into_every_producer() -> None:
    source = upstream_source(faust_aiokafka, "Producer._new_producer")
    assert "**self._settings_extra()," in source
    assert "return self._producer_type(" in source


async def test_the_workers_producer_is_idempotent() -> None:
    app = create_app(Settings())
    producer = app.producer._new_producer()  # type: ignore[attr-defined]
    try:
        assert producer._txn_manager is not None  # aiokafka numbers the batches
        assert producer._sender._acks == -1  # "all"
    finally:
        await producer.stop()
    idempotence.install()  # a second install changes nothing
    extra = faust_aiokafka.Producer._settings_extra(app.producer)  # type: ignore[arg-type]
    assert extra == idempotence.IDEMPOTENT
