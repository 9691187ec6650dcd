"""The ``fraudstream`` command: a thin group, one module per command group.

Global options override the environment (``FRAUDSTREAM_*``) and ``.env``; every command
receives the resulting frozen ``Settings`` through the Typer context.

A command's module is imported only when that command runs or shows its help
(`streams.cli.lazygroup`), so ``fraudstream --help`` starts in a fraction of a second
however heavy the commands are. To add one: write ``streams/cli/<name>.py`` with the
command function (or a ``typer.Typer`` for a group of commands) and give it a line in
``COMMANDS``; ``tests/unit/streams/test_cli_imports.py`` checks that the table names
every command module, with each command's own first line of help.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from streams.cli.lazygroup import LazyCommand, LazyGroup

#: Every command: name -> where it is defined, and the line ``fraudstream --help`` shows.
COMMANDS: Final[dict[str, LazyCommand]] = {
    "worker": LazyCommand(
        "streams.cli.worker",
        "worker",
        "Declare the product topics, then score transactions until SIGTERM or Ctrl-C.",
    ),
    "train": LazyCommand(
        "streams.cli.train",
        "train",
        "Train a model on a dataset's offline features, assess it, register a version.",
    ),
    "demo": LazyCommand(
        "streams.cli.demo",
        "demo",
        "Run the demo: a model scores a replayed week live and the alerts are summarised.",
    ),
    "settings": LazyCommand(
        "streams.cli.settings_cmd",
        "show_settings",
        "Print every setting as VARIABLE=value (.env format), secrets masked.",
    ),
    "generate": LazyCommand(
        "streams.cli.generate",
        "generate",
        "Simulate card transactions with frauds (the handbook's generator) and write them.",
    ),
    "replay": LazyCommand(
        "streams.cli.replay",
        "replay",
        "Replay a dataset into the transactions and fraud-reports topics, in event-time order.",
    ),
    "alerts": LazyCommand(
        "streams.cli.alerts",
        "alerts",
        "Print the alerts the workers raised (topic ``alerts``), as a table or JSON lines.",
    ),
    "infra": LazyCommand(
        "streams.cli.infra",
        "cli",
        "Start, stop and inspect local Kafka and Redis (127.0.0.1 only).",
    ),
    "model": LazyCommand(
        "streams.cli.model",
        "cli",
        "Inspect and promote model versions in the registry.",
    ),
}


class CommandGroup(LazyGroup):
    """The ``fraudstream`` group: the commands of ``COMMANDS``, each imported when used."""

    lazy_commands = COMMANDS


cli = typer.Typer(
    name="fraudstream",
    cls=CommandGroup,
    help="Real-time card-fraud detection on Kafka, Faust, Redis and scikit-learn.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
    # Imported here: pydantic-settings is not needed to list the commands.
    import logging
    import os

    from pydantic import ValidationError

    from streams.logsetup import configure_logging
    from streams.settings import Settings, unknown_env_vars

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
    for name, meant in unknown_env_vars(os.environ):
        hint = f" (did you mean {meant}?)" if meant else ""
        logging.getLogger("streams.settings").warning(
            "%s is not a fraudstream setting and is ignored%s", name, hint
        )
    ctx.obj = settings


def main(args: Sequence[str] | None = None) -> None:
    """Console-script entry point; ``args`` default to the command line's."""
    cli(args=None if args is None else list(args))
