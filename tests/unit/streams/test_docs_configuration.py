"""docs/configuration.md says what the code reads: every setting, option and CLI flag.

The settings table is generated from `streams.settings.Settings` by
``python -m streams.settings_doc``; the page must hold exactly what the generator
produces now. The table-store options and the global CLI options are written by hand
and compared with the code here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from pydantic.fields import FieldInfo

from streams.cli import cli
from streams.settings import Settings, env_var
from streams.settings_doc import (
    BEGIN_MARK,
    CONFIGURATION_PAGE,
    END_MARK,
    REGENERATE,
    description_of,
    main,
    render_settings_table,
    settings_rows,
    with_generated_table,
)
from streams.tablestore.config import StoreConfigError, parse_store_config


def page() -> str:
    return CONFIGURATION_PAGE.read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of one ``## title`` section of the page."""
    text = page()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_the_settings_table_is_what_the_generator_makes() -> None:
    assert with_generated_table(page()) == page(), (
        f"docs/configuration.md differs from streams/settings.py: run `{REGENERATE}` "
        "and commit the page"
    )


def test_every_setting_has_a_row_with_its_variable_and_default() -> None:
    table = render_settings_table()
    rows = settings_rows()
    assert [row.variable for row in rows] == [env_var(name) for name in Settings.model_fields]
    for row in rows:
        assert f"| `{row.variable}` |" in table
    port = next(row for row in rows if row.variable == "FRAUDSTREAM_WEB_PORT")
    assert (port.type, port.default) == ("integer, 1 to 65535", "`6066`")
    protocol = next(r for r in rows if r.variable == "FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL")
    assert protocol.type == "one of `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`"
    local_dir = next(row for row in rows if row.variable == "FRAUDSTREAM_LOCAL_DIR")
    assert local_dir.default == "`.local` in the checkout"  # never this machine's path


def test_every_setting_has_a_description_on_its_field() -> None:
    undescribed = sorted(
        name
        for name, field in Settings.model_fields.items()
        if not (field.description or "").strip()
    )
    assert undescribed == [], (
        "give these settings a description on their Field in streams/settings.py"
    )


@pytest.mark.parametrize("description", [None, "", "  \n "])
def test_a_setting_without_a_description_is_refused(description: str | None) -> None:
    field = FieldInfo(annotation=str, default="", description=description)
    with pytest.raises(ValueError, match="setting web_host has no description"):
        description_of("web_host", field)


def test_the_generator_rewrites_a_stale_page_and_check_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(f"# Configuration\n\n{BEGIN_MARK}\nSTALE ROW\n{END_MARK}\n\nhand-written\n")
    assert main(["--check", "--page", str(stale)]) == 1
    assert REGENERATE in capsys.readouterr().err
    assert main(["--page", str(stale)]) == 0
    assert main(["--check", "--page", str(stale)]) == 0
    text = stale.read_text()
    assert "STALE ROW" not in text
    assert text.endswith("\n\nhand-written\n")
    assert render_settings_table() in text


def test_a_page_without_markers_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "configuration.md"
    bare.write_text("# Configuration\n")
    with pytest.raises(ValueError, match="markers"):
        main(["--page", str(bare)])


def test_the_table_store_options_are_those_the_store_knows() -> None:
    with pytest.raises(StoreConfigError, match="known: ") as refused:
        parse_store_config("redis://127.0.0.1:6379/0?no_such_option=1", environ={})
    known = set(str(refused.value).split("known: ", 1)[1].split(", "))
    documented = set(
        re.findall(r"^\| `([a-z_]+)` \|", section("Table store URL and options"), re.MULTILINE)
    )
    assert documented == known


def test_the_global_cli_options_listed_are_the_commands() -> None:
    group = typer.main.get_command(cli)
    flags = {
        option
        for param in group.params
        if param.param_type_name == "option"
        for option in param.opts
        if option != "--help"
    }
    assert "--bootstrap-servers" in flags
    intro = page().split("\n## ", 1)[0]
    listed = set(re.findall(r"`(--[a-z-]+)`", intro))
    assert listed == flags
