"""Every relative link of the README, docs/ and schemas/README.md leads somewhere.

A link must name an existing file or directory of the repository; a link with a
``#fragment`` into a markdown page must name one of its headings, slugged as GitHub does.
Links inside fenced code blocks are code, not links; links to other sites are not
followed.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PAGES = sorted([REPO / "README.md", REPO / "schemas" / "README.md", *REPO.glob("docs/*.md")])

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)")


def prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (those inside become empty)."""
    lines = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return lines


def without_code_spans(line: str) -> str:
    """The line with its inline code removed: ``[`x`](y)`` stays a link, `` `[x](y)` `` goes."""
    return _CODE_SPAN.sub("", line)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (before de-duplication).

    Inline links keep their text; then lower case, every character that is not a letter,
    digit, space, hyphen or underscore dropped, spaces made hyphens.
    """
    text = _INLINE_LINK.sub(r"\1", heading).strip().lower()
    kept = "".join(
        char for char in text if char in " -_" or unicodedata.category(char)[0] in ("L", "N")
    )
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page, repeated headings numbered as GitHub does."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in prose_lines(page.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if match is None:
            continue
        slug = github_slug(match[2])
        seen = counts.get(slug, 0)
        counts[slug] = seen + 1
        found.add(slug if seen == 0 else f"{slug}-{seen}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link of a page, outside code blocks."""
    return [
        (number, match[1])
        for number, line in enumerate(prose_lines(page.read_text(encoding="utf-8")), start=1)
        for match in _LINK.finditer(without_code_spans(line))
    ]


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """What is wrong with the relative links of one page, one message per link."""
    problems = []
    for number, target in links(page):
        if _EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(root)}:{number}: {target}"
        if not destination.exists():
            problems.append(f"{where}: no such file")
        elif root.resolve() not in (destination, *destination.parents):
            problems.append(f"{where}: outside the repository")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            problems.append(f"{where}: no heading with anchor #{fragment}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    assert broken_links(page) == []


def test_the_pages_are_the_readme_the_docs_and_the_schemas_readme() -> None:
    names = {str(page.relative_to(REPO)) for page in PAGES}
    assert {"README.md", "schemas/README.md", "docs/architecture.md"} <= names
    assert all(links(REPO / name) for name in ("README.md", "docs/operations.md"))


def test_slugs_follow_github() -> None:
    assert github_slug("Redis down, Redis forgetting") == "redis-down-redis-forgetting"
    assert github_slug("The quarantine package: streams/faustcompat") == (
        "the-quarantine-package-streamsfaustcompat"
    )
    assert github_slug("Redis-backed tables (`redis://`)") == "redis-backed-tables-redis"
    assert github_slug("See [the docs](docs/x.md) now") == "see-the-docs-now"
    assert github_slug("Entity state bytes") == "entity-state-bytes"


def test_repeated_headings_are_numbered(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Notes\n\n```\n# not a heading\n```\n\n## Notes\n")
    assert anchors(page) == {"title", "notes", "notes-1"}


def test_broken_links_and_anchors_are_reported(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "other.md").write_text("# Other\n\n## Some part\n")
    (tmp_path / "outside.md").touch()
    page = repo / "docs" / "page.md"
    page.write_text(
        "# Page\n"
        "[a](missing.md) [b](#nowhere) [c](https://example.com) `[d](x.md)`\n"
        "[`e`](other.md#some-part) [f](other.md#none) [g](#page) [h](../../outside.md)\n"
        "```\n[i](in-code.md)\n```\n"
    )
    assert broken_links(page, repo) == [
        "docs/page.md:2: missing.md: no such file",
        "docs/page.md:2: #nowhere: no heading with anchor #nowhere",
        "docs/page.md:3: other.md#none: no heading with anchor #none",
        "docs/page.md:3: ../../outside.md: outside the repository",
    ]


def test_the_modules_named_in_the_architecture_diagrams_exist() -> None:
    page = REPO / "docs" / "architecture.md"
    text = page.read_text(encoding="utf-8")
    blocks = re.findall(r"^```\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    named = {
        path
        for block in blocks
        for path in re.findall(r"\b(?:streams|features|models|schemas)/[\w./-]*[\w/]", block)
    }
    assert len(named) > 10
    assert sorted(path for path in named if not (REPO / path).exists()) == []
