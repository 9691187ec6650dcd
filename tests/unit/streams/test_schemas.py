"""The committed JSON Schema files are exactly what the code generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs; comes with nbformat

from streams.contracts import PUBLISHED
from streams.schemas import SCHEMA_DIR, json_schema, main, schema_file_name, stale_files


def test_committed_schema_files_match_the_code() -> None:
    stale = stale_files()
    assert stale == [], (
        f"schema files out of date: {[str(p) for p in stale]}; "
        "run `python -m streams.schemas --write` and commit them"
    )


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    document = json.loads((SCHEMA_DIR / schema_file_name(PUBLISHED[name])).read_text())
    Draft202012Validator.check_schema(document)
    assert document["$id"].endswith(":v1")


def test_the_schemas_readme_lists_every_published_schema() -> None:
    readme = (SCHEMA_DIR / "README.md").read_text()
    for contract in PUBLISHED.values():
        assert f"| `{schema_file_name(contract)}` |" in readme, schema_file_name(contract)


def test_required_fields_are_the_non_nullable_ones() -> None:
    schema = json_schema(PUBLISHED["transaction"])
    assert schema["required"] == [
        "tx_id",
        "tx_time",
        "customer_id",
        "terminal_id",
        "amount",
        "currency",
        "schema_version",
    ]
    assert schema["properties"]["channel"]["type"] == ["string", "null"]


def test_alert_schema_defines_its_nested_reason() -> None:
    schema = json_schema(PUBLISHED["alert"])
    assert schema["properties"]["reasons"]["items"] == {"$ref": "#/$defs/AlertReason"}
    assert schema["$defs"]["AlertReason"]["required"] == ["feature", "value"]


def test_check_and_write_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["--write", "--dir", str(tmp_path)]) == 0
    assert main(["--dir", str(tmp_path)]) == 0
    edited = tmp_path / "transaction.v1.json"
    edited.write_text(edited.read_text().replace("epoch milliseconds", "epoch seconds"))
    assert stale_files(tmp_path) == [edited]
