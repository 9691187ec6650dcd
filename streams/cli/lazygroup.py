"""A Typer command group that imports a command's module only when that command is used.

The group knows its commands from a table (`LazyCommand`: module, attribute, one-line
help). ``fraudstream --help`` lists them from the table alone; ``fraudstream alerts ...``
(its ``--help`` included) imports ``streams.cli.alerts`` and nothing of the other commands.
So a command that needs scikit-learn or Faust slows down that command only.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
import typer.main

# Typer vendors click: its groups hold typer._click commands, not the click package's.
from typer import _click
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """Where a command is defined, and the line that the group's help shows for it.

    Attributes:
        module: The module that defines it (``streams.cli.alerts``).
        attribute: In that module, the command function, or a ``typer.Typer`` for a group
            of commands (``fraudstream model list|show|promote``).
        short_help: What the command's own help says first: the first paragraph of the
            function's docstring, or the Typer's ``help``.
    """

    module: str
    attribute: str
    short_help: str

    def load(self, name: str) -> _click.Command:
        """Import the module and build the command as ``Typer.command`` or ``add_typer`` would."""
        target = getattr(importlib.import_module(self.module), self.attribute)
        holder = typer.Typer()
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=name)
        else:
            holder.command(name)(target)
        return typer.main.get_group(holder).commands[name]


class LazyCommands(MutableMapping[str, _click.Command]):
    """A group's commands by name, each built on first access; the names cost nothing."""

    def __init__(
        self, table: Mapping[str, LazyCommand], built: Mapping[str, _click.Command]
    ) -> None:
        self._table = dict(table)
        self._built = dict(built)

    def __getitem__(self, name: str) -> _click.Command:
        if name not in self._built:
            self._built[name] = self._table[name].load(name)
        return self._built[name]

    def __setitem__(self, name: str, command: _click.Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._table.pop(name, None)
        self._built.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._table or name in self._built

    def __iter__(self) -> Iterator[str]:
        yield from self._table
        yield from (name for name in self._built if name not in self._table)

    def __len__(self) -> int:
        return len(self._table.keys() | self._built.keys())

    def listing(self) -> dict[str, _click.Command]:
        """Every command for a help listing: built ones as they are, others as their line."""
        return {
            name: self._built.get(name)
            or TyperCommand(name, short_help=self._table[name].short_help)
            for name in self
        }


class LazyGroup(TyperGroup):
    """A ``TyperGroup`` whose commands come from ``lazy_commands``, imported when used.

    Subclass it with the table, then ``typer.Typer(cls=TheSubclass)``: Typer builds the
    group itself and passes no table. Commands registered on the Typer the usual way
    (``@app.command()``) are listed after the table's.
    """

    lazy_commands: ClassVar[Mapping[str, LazyCommand]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(self.lazy_commands, self.commands)

    def list_commands(self, ctx: _click.Context) -> list[str]:
        """The table's names in its order (TyperGroup's would build every command)."""
        return list(self.commands)

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        """The group's help, which lists the commands by their table lines: none is imported."""
        listed = copy.copy(self)
        listed.commands = (
            self.commands.listing() if isinstance(self.commands, LazyCommands) else self.commands
        )
        super(LazyGroup, listed).format_help(ctx, formatter)
