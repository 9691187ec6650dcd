"""``fraudstream worker``: run a stream worker of the live pipeline."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from streams.settings import Settings

logger = logging.getLogger(__name__)


def worker(ctx: typer.Context) -> None:
    """Declare the product topics, then score transactions until SIGTERM or Ctrl-C.

    Exits with 69 when Kafka refuses one of its outputs for good (a topic's
    max.message.bytes, an ACL): nothing since its last flush counts as processed, so a
    restart sends it again once the topic is fixed.

    Start more workers with other --web-port values to share the partitions. Health,
    readiness and metrics are served at http://<web host>:<web port>/health, /ready and
    /metrics, from threads of their own: they answer while Redis or Kafka is down.
    """
    # Imported here: Faust and the models take seconds to import; `worker --help` needs neither.
    import faust

    from streams.app import create_app
    from streams.crashexit import exit_when_stuck
    from streams.delivery import EXIT_UNDELIVERED, Refusal
    from streams.faustcompat import UnsupportedVersionError
    from streams.kafka import (
        BrokerUnavailableError,
        ensure_topics,
        producer_batch_bytes,
        product_topics,
    )
    from streams.pipeline import build_pipeline

    settings: Settings = ctx.obj
    try:
        # Logs the topics it creates.
        asyncio.run(ensure_topics(settings, product_topics(settings)))
        # Record batches a topic would refuse would stop the worker: kept under its limit.
        batch_bytes = asyncio.run(producer_batch_bytes(settings))
    except BrokerUnavailableError as exc:
        typer.echo(f"fraudstream worker: {exc}", err=True)
        raise typer.Exit(1) from None
    if batch_bytes != settings.producer_batch_bytes:
        settings = settings.model_copy(update={"producer_batch_bytes": batch_bytes})
    try:
        app = create_app(settings)
    except UnsupportedVersionError as exc:
        typer.echo(f"fraudstream worker: {exc}", err=True)
        raise typer.Exit(1) from None
    refused: list[Refusal] = []

    def stop_on_refusal(refusal: Refusal) -> None:
        # The graceful stop an operator's SIGTERM starts: the batch in hand ends, the
        # tables' flushes write nothing (streams.delivery), the worker leaves the group.
        refused.append(refusal)
        signal.raise_signal(signal.SIGTERM)

    pipeline = build_pipeline(app, settings, on_refusal=stop_on_refusal)
    # Logging stays as the CLI configured it (one format, text or JSON): mode's worker
    # would replace it with its own, and its banner is a dozen lines of box drawing.
    runner = faust.Worker(app, loglevel=settings.log_level, override_logging=False, quiet=True)
    runner.spinner = None  # its terminal escapes would land in the log
    pipeline.web.start()  # before Faust starts: probes answer during table recovery too
    pipeline.heartbeat.start(runner.loop)
    exit_when_stuck(runner)  # a crash or a stop that hangs must still end the process
    logger.info(
        "worker %s starting: brokers %s, table store %s, web http://%s:%d",
        settings.app_id,
        settings.kafka_bootstrap_servers,
        app.conf.store,
        settings.web_host,
        pipeline.web.port,
    )
    try:
        runner.execute_from_commandline()
    except SystemExit:
        if refused:
            typer.echo(f"fraudstream worker: stopped: {refused[0]}", err=True)
            raise SystemExit(EXIT_UNDELIVERED) from None
        raise
    finally:
        pipeline.web.stop()
        if pipeline.spans is not None:
            pipeline.spans.close()  # export the spans still queued
