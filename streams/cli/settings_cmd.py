"""``fraudstream settings``: the effective configuration, secrets masked."""

from __future__ import annotations

import typer

from streams.settings import Settings, env_var


def show_settings(ctx: typer.Context) -> None:
    """Print every setting as VARIABLE=value (.env format), secrets masked."""
    settings: Settings = ctx.obj
    for name, value in settings.public_view().items():
        typer.echo(f"{env_var(name)}={'' if value is None else value}")
