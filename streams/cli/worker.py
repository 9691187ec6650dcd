"""``fraudstream worker``: run a stream worker of the live pipeline."""

from __future__ import annotations

import asyncio

import faust
import typer

from streams.app import create_app
from streams.kafka import BrokerUnavailableError, ensure_topics, product_topics
from streams.pipeline import build_pipeline
from streams.settings import Settings


def worker(ctx: typer.Context) -> None:
    """Declare the product topics, then score transactions until SIGTERM or Ctrl-C.

    Start more workers with other --web-port values to share the partitions. Metrics
    are served at http://<web host>:<web port>/metrics.
    """
    settings: Settings = ctx.obj
    try:
        created = asyncio.run(ensure_topics(settings, product_topics(settings)))
    except BrokerUnavailableError as exc:
        typer.echo(f"fraudstream worker: {exc}", err=True)
        raise typer.Exit(1) from None
    if created:
        typer.echo(f"created topics: {', '.join(sorted(created))}")
    app = create_app(settings)
    build_pipeline(app, settings)
    faust.Worker(app, loglevel=settings.log_level).execute_from_commandline()
