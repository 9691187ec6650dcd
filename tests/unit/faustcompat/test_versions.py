"""streams.faustcompat.check_versions: the worker refuses libraries it does not mirror."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

import streams.kafka
from streams.app import create_app
from streams.cli import cli
from streams.faustcompat import PINNED, UnsupportedVersionError, check_versions, versions
from streams.settings import Settings

PYPROJECT = Path(__file__).parents[3] / "pyproject.toml"


def installed(found: dict[str, str]) -> SimpleNamespace:
    """A stand-in for ``importlib.metadata`` that knows only the versions in ``found``."""

    class PackageNotFoundError(Exception):
        pass

    def version(distribution: str) -> str:
        if distribution not in found:
            raise PackageNotFoundError(distribution)
        return found[distribution]

    return SimpleNamespace(version=version, PackageNotFoundError=PackageNotFoundError)


def test_the_pins_are_pyprojects() -> None:
    """Bump a pin in pyproject.toml and in PINNED together, after tests/unit/faustcompat
    passes against the new version."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = dict(d.split("==") for d in dependencies if "==" in d)
    assert {name: pins.get(name) for name in PINNED} == PINNED


def test_the_installed_versions_are_the_pinned_ones() -> None:
    check_versions()


def test_another_version_is_refused_in_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        versions,
        "metadata",
        installed({"faust-streaming": "0.16.0", "aiokafka": "0.14.0", "mode-streaming": "0.7.1"}),
    )
    with pytest.raises(UnsupportedVersionError) as caught:
        check_versions()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("unsupported faust-streaming 0.16.0 (needs 0.15.3):")
    assert "aiokafka" not in message.split(":")[0]


def test_a_missing_library_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        versions, "metadata", installed({"faust-streaming": "0.15.3", "mode-streaming": "0.7.1"})
    )
    with pytest.raises(UnsupportedVersionError, match=r"aiokafka not installed \(needs 0.14.0\)"):
        check_versions()


def test_create_app_checks_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(versions, "metadata", installed({"aiokafka": "0.13.0"}))
    with pytest.raises(UnsupportedVersionError, match="faust-streaming not installed"):
        create_app(Settings(local_dir=tmp_path, app_id="versions"))
    assert not (tmp_path / "worker-data").exists()  # refused before anything was made


def test_the_worker_command_says_it_in_one_line_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def no_topics(*args: object) -> None:
        return None

    monkeypatch.setattr(streams.kafka, "ensure_topics", no_topics)  # no broker here
    monkeypatch.setattr(
        versions,
        "metadata",
        installed({"faust-streaming": "0.15.3", "aiokafka": "0.15.0", "mode-streaming": "0.7.1"}),
    )
    monkeypatch.setenv("FRAUDSTREAM_LOCAL_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["worker"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "fraudstream worker: unsupported aiokafka 0.15.0 (needs 0.14.0): streams.faustcompat "
        "mirrors internals of exactly these versions; install the versions pyproject.toml pins"
    ]
