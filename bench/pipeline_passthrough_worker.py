"""The pass-through worker of bench_pipeline.py: the ceiling of one Faust worker.

Not run by hand: bench_pipeline.py starts it with the FRAUDSTREAM_* variables of the
pipeline worker it is compared with (app id, topic names and partitions, batch_max,
web port; ``Settings.as_env()``) and ``BENCH_OUTPUT_TOPIC``, a topic that
exists already. It builds the app as the pipeline worker does (``streams.app.create_app``),
consumes the same transactions topic as raw bytes in ``take_events`` micro-batches of the
same size, and sends each event's bytes to the output topic, one ``producer.send`` per
event (as the pipeline forwards every transaction), with no decoding, table or model.

Progress is counted the way the pipeline counts it, so the benchmark observes both alike:
``fraudstream_transactions_total`` on ``/metrics`` of the worker's web port
(``streams.metrics``), increased once per micro-batch.
"""

from __future__ import annotations

import os
from typing import Any

import faust

from streams.app import create_app
from streams.metrics import PipelineMetrics, install_metrics_view
from streams.settings import Settings

settings = Settings()
OUTPUT_TOPIC = os.environ["BENCH_OUTPUT_TOPIC"]
# Faust's own web server serves /metrics here (the pipeline worker serves its pages from
# threads, streams.webserver, and keeps Faust's off).
app = create_app(settings, web_enabled=True)
metrics = PipelineMetrics()
source = app.topic(
    settings.topic_names["transactions"],
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
)
BATCH_MAX = settings.batch_max
#: take_events' wait to fill a batch, as the pipeline's agents had it before they took
#: raw batches (streams.faustcompat.rawbatches).
WITHIN_S = 0.01


@app.agent(source, name="passthrough")
async def passthrough(stream: Any) -> None:
    """Forward every event's bytes, unchanged, to the output topic."""
    send = app.producer.send
    async for events in stream.take_events(BATCH_MAX, WITHIN_S):
        for event in events:
            message = event.message
            await send(OUTPUT_TOPIC, event.key, event.value, message.partition, None, None)
        metrics.transactions.inc(len(events))


install_metrics_view(app, metrics)

if __name__ == "__main__":
    faust.Worker(app, loglevel=settings.log_level).execute_from_commandline()
