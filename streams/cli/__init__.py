"""The ``fraudstream`` command: a thin group, one module per command group.

Global options override the environment (``FRAUDSTREAM_*``) and ``.env``; every command
receives the resulting frozen ``Settings`` through the Typer context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from streams.cli import alerts, demo, generate, infra, replay, settings_cmd, worker
from streams.cli import model as model_cmd
from streams.cli import train as train_cmd
from streams.logsetup import configure_logging
from streams.settings import Settings

cli = typer.Typer(
    name="fraudstream",
    help="Real-time card-fraud detection on Kafka, Faust, Redis and scikit-learn.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cli.add_typer(infra.cli, name="infra")
cli.add_typer(model_cmd.cli, name="model")
cli.command("worker")(worker.worker)
cli.command("train")(train_cmd.train)
cli.command("demo")(demo.demo)
cli.command("settings")(settings_cmd.show_settings)
cli.command("generate")(generate.generate)
cli.command("replay")(replay.replay)
cli.command("alerts")(alerts.alerts)


@cli.callback()
def configure(
    ctx: typer.Context,
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (host:port,...).")
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL, without password.")] = None,
    topic_prefix: Annotated[str | None, typer.Option(help="Prefix of every topic name.")] = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions per declared topic.")] = None,
    model_registry_dir: Annotated[
        Path | None, typer.Option("--registry", help="Model registry directory.")
    ] = None,
    web_port: Annotated[int | None, typer.Option(help="Worker web server port.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warn, error or crit.")] = None,
) -> None:
    """Read the settings once: CLI options, then FRAUDSTREAM_* variables, then defaults."""
    overrides: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap_servers,
        "redis_url": redis_url,
        "topic_prefix": topic_prefix,
        "topic_partitions": partitions,
        "model_registry_dir": model_registry_dir,
        "web_port": web_port,
        "log_level": log_level,
    }
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        typer.echo(f"fraudstream: invalid settings: {problems}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    ctx.obj = settings


def main() -> None:
    """Console-script entry point."""
    cli()
