"""The README stays a newcomer's page, and the documentation's links work in a clone.

README.md is short (what it is, two commands, "try it", links to docs/), speaks no
tracker language (issue numbers), and every relative link or image in it, in
docs/*.md and in the compose/ and loadtests/ READMEs points to a file of the
repository (and a `#fragment` into a Markdown page to one of its headings, as
GitHub renders them).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# Linked from the README; their links must work too.
LINKED = [ROOT / "compose" / "README.md", ROOT / "loadtests" / "README.md"]
# The pages the README must lead to, one per audience.
DOC_PAGES = ["architecture", "operations", "api", "topology", "benchmarks", "deployment"]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
ISSUE_NUMBER = re.compile(r"\bissues?\s*#?\s*\d+|\(decision\)", re.I)


def prose(text: str) -> str:
    """The text as rendered prose: fenced blocks and code spans removed."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of `page` that lead nowhere in the repository."""
    bad = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = page if not path else (page.parent / path).resolve()
        if not dest.exists() or root not in (dest, *dest.parents):
            bad.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            bad.append(f"{target} (no heading #{fragment} in {dest.name})")
    return bad


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < 200, f"README.md has {lines} lines; move details into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_tracker_language(page: Path) -> None:
    found = ISSUE_NUMBER.findall(prose(page.read_text(encoding="utf-8")))
    assert not found, f"{page.name} speaks of {found}: say what it is, not where it was decided"


@pytest.mark.parametrize("page", PAGES + LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert not broken(page), f"{page.relative_to(ROOT)}: broken links {broken(page)}"


def test_readme_leads_to_every_docs_page() -> None:
    targets = {t.partition("#")[0] for t in links(README)}
    missing = [p for p in DOC_PAGES if f"docs/{p}.md" not in targets]
    assert not missing, f"README.md does not link docs/{missing}"
    assert "docs/seat-map.png" in targets, "README.md lost its screenshot"


def test_checks_can_fail(tmp_path: Path) -> None:
    """The link check and the tracker check find what they are for."""
    (tmp_path / "there.md").write_text("# A heading: here\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#a-heading-here) [gone](missing.md) "
                    "[frag](there.md#nowhere) [web](https://example.com/x.md) "
                    "`[code](inside-code.md)`\nAs issue 11 said (decision).\n",
                    encoding="utf-8")
    assert broken(page, root=tmp_path) == [
        "missing.md (no such file)", "there.md#nowhere (no heading #nowhere in there.md)"]
    assert ISSUE_NUMBER.findall(page.read_text(encoding="utf-8")) == ["issue 11", "(decision)"]
