"""Refuse to start on a faust-streaming, aiokafka or mode other than the one faustcompat mirrors.

Every module of this package reads or replaces code of one exact upstream version
(faust-streaming 0.15.3, aiokafka 0.14.0, mode-streaming 0.7.1, Faust's service
framework): a fetch loop copied from Faust's, offset maps Faust does not publish, a
header decoder mirroring aiokafka's, mode's stop of a service thread. Another version may run
without an error and lose or duplicate events, so `check_versions` (called by
``streams.app.create_app``) stops the worker at once, in one line, instead.

`PINNED` repeats the pins of ``pyproject.toml`` (which the worker image does not
carry): ``tests/unit/faustcompat/test_versions.py`` fails when the two differ, so
bumping a pin means bumping it here too, after ``tests/unit/faustcompat`` passes
against the new version (docs/development.md, "The quarantine package").
"""

from __future__ import annotations

from importlib import metadata
from typing import Final

#: The distributions faustcompat mirrors, and the one version of each it supports.
PINNED: Final[dict[str, str]] = {
    "faust-streaming": "0.15.3",
    "aiokafka": "0.14.0",
    "mode-streaming": "0.7.1",
}


class UnsupportedVersionError(RuntimeError):
    """An installed faust-streaming or aiokafka is not the version faustcompat mirrors."""


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def check_versions() -> None:
    """Check that the installed faust-streaming, aiokafka and mode are the pinned versions.

    Raises:
        UnsupportedVersionError: One of them is another version, or missing; the
            message is one line naming each.
    """
    wrong = []
    for distribution, pinned in PINNED.items():
        installed = installed_version(distribution)
        if installed != pinned:
            wrong.append(f"{distribution} {installed or 'not installed'} (needs {pinned})")
    if wrong:
        raise UnsupportedVersionError(
            f"unsupported {', '.join(wrong)}: streams.faustcompat mirrors internals of "
            "exactly these versions; install the versions pyproject.toml pins"
        )
