"""``fraudstream infra up|down|status``: the local Kafka broker and redis-server.

``--only redis-cluster`` works on the local three-master Redis Cluster instead, and
``--only kafka-cluster`` on the local three-broker Kafka cluster; the commands leave both
alone otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer

from streams.settings import Settings

if TYPE_CHECKING:
    from streams.localinfra import LocalService

#: The services ``--only`` names: ``streams.localinfra.ServiceName``, repeated here so that
#: ``fraudstream infra --help`` starts without importing the Kafka and Redis clients
#: (tests/unit/streams/test_cli_imports.py checks that the two agree).
ServiceName = Literal["kafka", "redis", "redis-cluster", "kafka-cluster"]

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
    from streams.localinfra import ServiceError

    for service in _services(ctx, only):
        try:
            typer.echo(service.start())
        except ServiceError as exc:
            typer.echo(f"fraudstream infra: {service.name}: {exc}", err=True)
            raise typer.Exit(1) from None


@cli.command()
def down(ctx: typer.Context, only: Only = None) -> None:
    """Stop the running services; nothing is left behind."""
    for service in reversed(_services(ctx, only)):
        typer.echo(service.stop())


@cli.command()
def status(ctx: typer.Context, only: Only = None) -> None:
    """Tell whether each service runs and answers; exit 3 when one does not."""
    healthy = True
    for service in _services(ctx, only):
        state = service.status()
        healthy = healthy and state.healthy
        typer.echo(str(state))
    if not healthy:
        raise typer.Exit(3)


def _services(ctx: typer.Context, only: ServiceName | None) -> list[LocalService]:
    """The local services a command works on, in start order."""
    # Imported here: the Kafka and Redis clients are not needed for --help.
    from streams.localinfra import local_services

    settings: Settings = ctx.obj
    return local_services(settings, only)
