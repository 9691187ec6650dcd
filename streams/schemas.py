"""The published JSON Schema files of the event contracts, generated from the code.

Consumers in other languages validate against ``schemas/<name>.v<version>.json`` (JSON
Schema draft 2020-12). The files are generated from ``streams.contracts`` — never edited
by hand — and committed; ``tests/unit/streams/test_schemas.py`` fails when the code and
the committed files disagree. Regenerate after changing a contract::

    python -m streams.schemas --write     # rewrite schemas/*.json
    python -m streams.schemas --check     # exit 1 and name the stale files (the default)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from streams.contracts import PUBLISHED, Contract, RecordListRule
from streams.records import SCHEMA_VERSION
from streams.settings import PROJECT_ROOT

#: Where the schema files live in the repository.
SCHEMA_DIR: Final = PROJECT_ROOT / "schemas"

_DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"


def schema_file_name(contract: Contract[Any]) -> str:
    """The file name of a contract's schema at the current version."""
    return f"{contract.name}.v{SCHEMA_VERSION}.json"


def _object_schema(contract: Contract[Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema of one record as a JSON object; nested records go into ``defs``."""
    properties: dict[str, Any] = {}
    for field, rule in contract.rules.items():
        value_schema = rule.json_schema()
        if field in contract.optional:
            value_schema["type"] = [value_schema["type"], "null"]
        properties[field] = {"description": rule.description, **value_schema}
        if isinstance(rule, RecordListRule) and rule.contract.title not in defs:
            defs[rule.contract.title] = _object_schema(rule.contract, defs)
    doc = (contract.record.__doc__ or "").strip().split("\n\n")[0]
    schema: dict[str, Any] = {
        "title": contract.title,
        "description": " ".join(doc.replace("``", "`").split()),
        "type": "object",
        "properties": properties,
        "required": list(contract.required),
        # Additive evolution: readers ignore fields a newer producer adds.
        "additionalProperties": True,
    }
    if "schema_version" in contract.rules:
        # ...but an event claiming this version may only carry this version's fields.
        schema["if"] = {
            "properties": {"schema_version": {"maximum": SCHEMA_VERSION}},
            "required": ["schema_version"],
        }
        schema["then"] = {"propertyNames": {"enum": list(contract.rules)}}
    return schema


def json_schema(contract: Contract[Any]) -> dict[str, Any]:
    """The complete JSON Schema document of a contract at the current version."""
    defs: dict[str, Any] = {}
    body = _object_schema(contract, defs)
    document: dict[str, Any] = {
        "$schema": _DRAFT,
        "$id": f"urn:fraudstream:schema:{contract.name}:v{SCHEMA_VERSION}",
        **body,
    }
    if defs:
        document["$defs"] = defs
    return document


def render(contract: Contract[Any]) -> str:
    """The schema file's exact text: stable key order, two-space indent, final newline."""
    return json.dumps(json_schema(contract), indent=2, ensure_ascii=False) + "\n"


def stale_files(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Schema files that are missing or differ from what the code generates."""
    stale = []
    for contract in PUBLISHED.values():
        path = directory / schema_file_name(contract)
        if not path.is_file() or path.read_text(encoding="utf-8") != render(contract):
            stale.append(path)
    return stale


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every published contract's schema file; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for contract in PUBLISHED.values():
        path = directory / schema_file_name(contract)
        path.write_text(render(contract), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Check (default) or rewrite the committed schema files; the exit status says which."""
    parser = argparse.ArgumentParser(
        prog="python -m streams.schemas", description=(__doc__ or "").split("\n\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the schema files")
    mode.add_argument("--check", action="store_true", help="fail if a file is stale (default)")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="schema directory")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_all(args.dir):
            print(f"wrote {path}")
        return 0
    stale = stale_files(args.dir)
    for path in stale:
        print(f"stale: {path} (run python -m streams.schemas --write)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
