"""The garbage collector's settings for a stream worker: no long pauses on the event loop.

A worker's heap is mostly long-lived objects created at start-up: Faust, aiokafka,
NumPy, scikit-learn, Polars and the loaded model, hundreds of thousands of objects. A full
(generation 2) collection walks every one of them while holding the event loop; on this
project's benchmark machine one took about 370 ms, every few seconds at a few thousand
transactions a second, and each was a latency spike for every event waiting.

What the worker does (`settle`):

- ``gc.freeze()`` once the worker has started, and again after each model swap: the
  objects alive then move to a permanent generation the collector no longer walks. They
  are still freed by reference counting; only reference cycles among them would never be
  collected, which start-up objects and models do not form in any number worth it.
- A larger generation-0 threshold: the per-event garbage (messages, events, dicts) dies
  young in any case, and collecting it every 700 allocations costs CPU for nothing.

The collections that remain walk what the worker created since: window-state caches
(bounded) and in-flight work. ``fraudstream_gc_pause_seconds`` shows them.

"""

from __future__ import annotations

import gc
import logging
from typing import Final

logger = logging.getLogger(__name__)

#: Allocations (minus deallocations) between generation-0 collections; CPython's is 700.
GEN0_THRESHOLD: Final = 20_000


def settle(reason: str, *, collect: bool = True) -> None:
    """Freeze the objects alive now out of future collections (collecting garbage first).

    Args:
        reason: Why now ("started", "model swapped"), for the log.
        collect: Run a full collection first, so that no garbage cycle is frozen: at
            start-up; a model swap skips it, to spare the live stream its pause.
    """
    if collect:
        gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 < GEN0_THRESHOLD:
        gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    logger.info("%s: %d objects frozen out of garbage collection", reason, gc.get_freeze_count())
