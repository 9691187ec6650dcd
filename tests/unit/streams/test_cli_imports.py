"""``fraudstream`` starts fast: a command's module is imported only when it is used.

``import streams.cli`` and every ``--help`` run in a fresh interpreter, which must not have
imported scikit-learn, SciPy, Polars, skops, Faust or aiokafka afterwards. The table that
lists the commands without importing them must agree with the commands themselves.
"""

from __future__ import annotations

import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

import streams.cli
import streams.cli.infra
import streams.localinfra
from streams.cli import COMMANDS, cli
from streams.cli.lazygroup import LazyGroup

runner = CliRunner()

#: Packages that take seconds to import: no --help may need them.
HEAVY = frozenset({"sklearn", "scipy", "polars", "skops", "faust", "aiokafka", "mode"})
#: Modules of streams/cli that define no command.
NOT_COMMANDS = frozenset({"lazygroup"})
LAZY_MACHINERY = frozenset(f"streams.cli.{name}" for name in NOT_COMMANDS)

#: Imports the CLI, runs ``main(args)`` for each argument list (a --help exits 0), and
#: prints the modules loaded after the import and after each run.
PROBE = """
import json, sys

import streams.cli

def loaded():
    return sorted(sys.modules)

report = [loaded()]
for args in json.loads(sys.argv[1]):
    try:
        streams.cli.main(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    report.append(loaded())
print(json.dumps(report))
"""


def loaded_modules(tmp_path: Path, *runs: list[str]) -> list[set[str]]:
    """The modules loaded after ``import streams.cli``, then after each run.

    In a fresh interpreter, away from the repository's ``.env`` and ``FRAUDSTREAM_*``.
    """
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(runs)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [set(names) for names in json.loads(done.stdout.splitlines()[-1])]


def packages(modules: set[str]) -> set[str]:
    """The top-level packages of some modules."""
    return {name.split(".")[0] for name in modules}


def command_paths() -> list[list[str]]:
    """Every command and subcommand, as the words that name it: ``["model", "promote"]``."""
    paths: list[list[str]] = []
    for name, entry in COMMANDS.items():
        paths.append([name])
        command = entry.load(name)
        if isinstance(command, TyperGroup):
            paths.extend([name, sub] for sub in command.commands)
    return paths


def first_paragraph(text: str) -> str:
    """What a group's help shows of a command's help (typer's rich help)."""
    return inspect.cleandoc(text).split("\n\n")[0].strip()


# --- what a start imports ----------------------------------------------------------------


def test_importing_the_cli_loads_no_heavy_package_and_no_settings(tmp_path: Path) -> None:
    (after_import,) = loaded_modules(tmp_path)
    assert packages(after_import) & HEAVY == set()
    assert "pydantic_settings" not in packages(after_import)  # read when a command runs
    assert not any(name.startswith("streams.cli.") for name in after_import - LAZY_MACHINERY)


def test_top_level_help_loads_no_heavy_package_and_no_settings(tmp_path: Path) -> None:
    _, after_help = loaded_modules(tmp_path, ["--help"])
    assert packages(after_help) & HEAVY == set()
    assert "pydantic_settings" not in packages(after_help)
    assert not any(name.startswith("streams.cli.") for name in after_help - LAZY_MACHINERY)


def test_alerts_help_loads_no_heavy_package(tmp_path: Path) -> None:
    _, after_help = loaded_modules(tmp_path, ["alerts", "--help"])
    assert packages(after_help) & HEAVY == set()
    commands = {name for name in after_help - LAZY_MACHINERY if name.startswith("streams.cli.")}
    assert commands == {"streams.cli.alerts"}


def test_no_command_help_loads_a_heavy_package(tmp_path: Path) -> None:
    paths = command_paths()
    report = loaded_modules(tmp_path, *([*path, "--help"] for path in paths))
    # What each --help loaded that the ones before it had not: who loaded what.
    heavy = {
        " ".join(path): sorted(packages(after - before) & HEAVY)
        for path, before, after in zip(paths, report[:-1], report[1:], strict=True)
        if packages(after - before) & HEAVY
    }
    assert heavy == {}


# --- the table of commands ---------------------------------------------------------------


def test_the_table_names_every_command_module_once() -> None:
    modules = {info.name for info in pkgutil.iter_modules(streams.cli.__path__)} - NOT_COMMANDS
    listed = [entry.module for entry in COMMANDS.values()]
    assert sorted(listed) == sorted(f"streams.cli.{module}" for module in modules)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_line_of_the_table_is_the_commands_own_help(name: str) -> None:
    command = COMMANDS[name].load(name)
    assert command.name == name
    assert COMMANDS[name].short_help == first_paragraph(command.short_help or command.help or "")
    assert "\n" not in COMMANDS[name].short_help


def test_top_level_help_is_what_the_loaded_commands_would_show(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lazy, loaded = typer.main.get_command(cli), typer.main.get_command(cli)
    assert isinstance(lazy, LazyGroup)
    assert isinstance(loaded, LazyGroup)
    assert [loaded.commands[name].name for name in loaded.commands] == list(COMMANDS)

    helps = []
    for group in (lazy, loaded):
        assert group.main(["--help"], prog_name="fraudstream", standalone_mode=False) == 0
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1]
    assert all(name in helps[0] for name in COMMANDS)


def test_a_mistyped_command_is_still_suggested() -> None:
    result = runner.invoke(cli, ["alrts"])
    assert result.exit_code == 2
    assert "Did you mean 'alerts'?" in result.output


def test_infra_only_names_the_local_services() -> None:
    assert get_args(streams.cli.infra.ServiceName) == get_args(streams.localinfra.ServiceName)
