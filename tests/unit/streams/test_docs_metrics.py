"""docs/operations.md lists every metric a worker exports, and no other.

The names come from the "Metrics" table of the page and from the registry of
`streams.metrics.PipelineMetrics` (the worker's ``/metrics``). Elsewhere in the docs and
the README, a ``fraudstream_...`` name must be one the worker exports too.
"""

from __future__ import annotations

import re
from pathlib import Path

from streams.metrics import PipelineMetrics

REPO = Path(__file__).resolve().parents[3]
OPERATIONS = REPO / "docs" / "operations.md"
PAGES = [REPO / "README.md", *sorted(REPO.glob("docs/*.md"))]

#: A metric name as the docs write it, with its exported suffix (_total, _seconds...).
_NAME = re.compile(r"\bfraudstream_[a-z0-9_]*[a-z0-9]\b")
#: Series suffixes of a histogram, which the docs may name in a query.
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def exported_names() -> set[str]:
    """The fraudstream metric names a worker exports: counters with their ``_total``."""
    names = set()
    for family in PipelineMetrics().registry.collect():
        if family.name.startswith("fraudstream_"):
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def metrics_table() -> str:
    """The "## Metrics" section of docs/operations.md."""
    text = OPERATIONS.read_text(encoding="utf-8")
    start = text.index("\n## Metrics\n")
    return text[start : text.index("\n## ", start + 1)]


def table_names() -> list[str]:
    """The metric of each row of the section's table, in order."""
    return re.findall(r"^\| `(fraudstream_[a-z0-9_]+)` \|", metrics_table(), re.MULTILINE)


def test_the_metrics_table_names_every_exported_metric_and_no_other() -> None:
    listed = table_names()
    exported = exported_names()
    assert len(listed) == len(set(listed)), "a metric is listed twice"
    missing = sorted(exported - set(listed))
    unknown = sorted(set(listed) - exported)
    assert (missing, unknown) == ([], []), (
        f"docs/operations.md, Metrics: add {missing}, remove {unknown} "
        "(compared with streams.metrics.PipelineMetrics)"
    )


def test_every_metric_named_in_the_docs_is_exported() -> None:
    exported = exported_names()
    allowed = exported | {name + suffix for name in exported for suffix in _HISTOGRAM_SERIES}
    unknown = {
        f"{page.relative_to(REPO)}: {name}"
        for page in PAGES
        for name in _NAME.findall(page.read_text(encoding="utf-8"))
        if name not in allowed
    }
    assert sorted(unknown) == []


def test_the_table_is_found() -> None:
    assert "fraudstream_transactions_total" in table_names()
    assert len(table_names()) > 30
