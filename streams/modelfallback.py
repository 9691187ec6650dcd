"""Which model a worker falls back to when the promoted version does not load.

A promotion is checked before it is published (`streams.promotion`), but an artifact can
still fail on a worker afterwards: a file corrupted or replaced in the shared registry, a
worker whose libraries cannot read it. A worker starting then must not score nothing
while its partitions' lag grows: it walks back the promotion history, newest first, to
the newest version that loads and verifies, scores with it, and says so (`Fallback`, in
``/ready`` and ``fraudstream_model_fallback``). It tries the refused version again on a
timer, so an artifact repaired in the registry is picked up without a promotion; a retry
that fails for a reason already reported is not logged again (`ReportedReasons`).

The history is the model-control topic's promotions, then the registry's
(``current.json``, then ``promotions.jsonl``). The topic comes first because workers
follow it; the registry's part reaches further back, since the topic is compacted to its
latest promotion. Pure functions and values only: `streams.modelcontrol` does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from models.registry import Promotion


@dataclass(frozen=True)
class Candidate:
    """A version a worker may start with, and where it was found promoted.

    Attributes:
        version: The registry version.
        source: Where the promotion was read (the topic or a registry file), for logs.
    """

    version: str
    source: str


@dataclass(frozen=True)
class Refusal:
    """The newest promotion, which this worker could not load.

    Attributes:
        version: The promoted version.
        reason: Why it was refused (one line, from the registry's checks).
    """

    version: str
    reason: str


@dataclass(frozen=True)
class Fallback:
    """A worker scoring with an older version because the newest promotion was refused.

    Attributes:
        active_version: The version in use: the newest promoted one that loads.
        refused_version: The version promoted last, which did not load.
        reason: Why it was refused.
    """

    active_version: str
    refused_version: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """What ``/ready`` shows: the versions, why, and what to do about it."""
        return {
            "active_version": self.active_version,
            "refused_version": self.refused_version,
            "reason": self.reason,
            "action": (
                f"scoring with {self.active_version}, the last good model; promote a version "
                f"that loads, or repair {self.refused_version} in the registry: the worker "
                "tries it again periodically and swaps to it once it loads"
            ),
        }


class ReportedReasons:
    """The reasons a refused version was already reported with: each is logged once.

    A worker retries its refused version on a timer; an artifact that stays broken fails
    every retry the same way, and one WARNING per distinct reason says it all.
    """

    def __init__(self) -> None:
        self._version: str | None = None
        self._reasons: set[str] = set()

    def first(self, version: str, reason: str) -> bool:
        """Record a refusal; True unless ``version`` was already refused for ``reason``.

        Another version starts afresh: only the refused version's reasons are kept.
        """
        if version != self._version:
            self._version, self._reasons = version, set()
        if reason in self._reasons:
            return False
        self._reasons.add(reason)
        return True


def start_candidates(
    topic: Sequence[Promotion],
    registry_current: Promotion | None,
    registry_history: Sequence[Promotion],
    *,
    topic_name: str,
    registry_name: str,
) -> list[Candidate]:
    """The versions to try at start, in order: newest promotion first, each version once.

    Args:
        topic: The promotions read from the model-control topic, oldest first.
        registry_current: The registry's ``current.json``.
        registry_history: The registry's ``promotions.jsonl``, oldest first.
        topic_name: The topic's name, for the candidates' ``source``.
        registry_name: The registry's directory, for the candidates' ``source``.

    Returns:
        The topic's promotions newest first, then the registry's current version, then
        its history newest first; a version promoted several times appears once, at its
        newest place (a rollback to it is its newest promotion).
    """
    ordered: list[Candidate] = []
    seen: set[str] = set()

    def add(promotions: Iterable[Promotion], source: str) -> None:
        for promotion in promotions:
            if promotion.version not in seen:
                seen.add(promotion.version)
                ordered.append(Candidate(promotion.version, source))

    add(reversed(topic), f"the control topic {topic_name}")
    add([registry_current] if registry_current else [], f"{registry_name}/current.json")
    add(reversed(registry_history), f"{registry_name}/promotions.jsonl")
    return ordered
