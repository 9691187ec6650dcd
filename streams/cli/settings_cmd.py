"""``fraudstream settings``: the effective configuration, secrets masked."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from streams.settings import Settings, env_var


def show_settings(ctx: typer.Context) -> None:
    """Print every setting, its value and the environment variable that sets it."""
    settings: Settings = ctx.obj
    table = Table("setting", "value", "environment variable")
    for name, value in settings.public_view().items():
        table.add_row(name, str(value), env_var(name))
    Console().print(table)
