"""``fraudstream infra up|down|status``: the local Kafka broker and redis-server.

``--only redis-cluster`` works on the local three-master Redis Cluster instead, and
``--only kafka-cluster`` on the local three-broker Kafka cluster; the commands leave both
alone otherwise.
"""

from __future__ import annotations

from typing import Annotated

import typer

from streams.localinfra import ServiceError, ServiceName, local_services
from streams.settings import Settings

cli = typer.Typer(
    help="Start, stop and inspect local Kafka and Redis (127.0.0.1 only).", no_args_is_help=True
)

Only = Annotated[
    ServiceName | None,
    typer.Option(
        "--only",
        help="Just kafka, just redis, or one of the clusters only --only starts: "
        "redis-cluster (three Redis masters) or kafka-cluster (three KRaft brokers, "
        "replication factor 3, for fault tolerance tests).",
    ),
]


@cli.command()
def up(ctx: typer.Context, only: Only = None) -> None:
    """Start the services that are not running and wait until each answers."""
    settings: Settings = ctx.obj
    for service in local_services(settings, only):
        try:
            typer.echo(service.start())
        except ServiceError as exc:
            typer.echo(f"fraudstream infra: {service.name}: {exc}", err=True)
            raise typer.Exit(1) from None


@cli.command()
def down(ctx: typer.Context, only: Only = None) -> None:
    """Stop the running services; nothing is left behind."""
    settings: Settings = ctx.obj
    for service in reversed(local_services(settings, only)):
        typer.echo(service.stop())


@cli.command()
def status(ctx: typer.Context, only: Only = None) -> None:
    """Tell whether each service runs and answers; exit 3 when one does not."""
    settings: Settings = ctx.obj
    healthy = True
    for service in local_services(settings, only):
        state = service.status()
        healthy = healthy and state.healthy
        typer.echo(str(state))
    if not healthy:
        raise typer.Exit(3)
