"""Keep chosen partitions paused whatever the Faust consumer is told to resume.

Upstream: faust-streaming 0.15.3, ``faust/transport/consumer.py``,
``Consumer.resume_partitions(tps)``. Faust's table recovery (``faust/tables/
recovery.py``, ``Recovery``) calls it, looked up on the consumer at call time, with
every assigned partition at the end of each rebalance, so a partition paused with
``pause_partitions`` (public) is fetched again after the next rebalance.
`keep_paused` replaces the method on one consumer instance with one that leaves out the
partitions of a set the caller keeps (``streams.tablestore.refusal``: sources whose
state Redis lost beyond what the log can rebuild). Replacing a method Faust calls
internally is the patch; ``tests/unit/faustcompat/test_pauses_contract.py`` fails when
the method or the recovery's calls to it change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from typing import Any

from faust.types import TP


def keep_paused(consumer: Any, paused: Set[TP]) -> None:
    """Make ``consumer.resume_partitions`` skip every partition in ``paused``.

    ``paused`` is read at each call: the caller adds and removes partitions as it
    decides. Not idempotent: call it once per consumer.
    """
    faust_resume: Callable[[Iterable[TP]], None] = consumer.resume_partitions

    def resume_partitions(tps: Iterable[TP]) -> None:
        faust_resume({tp for tp in tps if tp not in paused})

    consumer.resume_partitions = resume_partitions
