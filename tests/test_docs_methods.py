"""Every citation of docs/METHODS.md in the package names one of its sections.

Docstrings point readers at ``docs/METHODS.md#<anchor>``; a renamed heading must not
leave them pointing nowhere. Anchors follow GitHub's rule for headings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHODS = ROOT / "docs" / "METHODS.md"
CITATION = re.compile(r"(?:docs/)?METHODS\.md(#[\w-]*)?")
SCANNED = (".py", ".md", ".txt", ".yaml", ".yml", ".json", ".jinja")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (hyphens and
    underscores kept), spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(markdown: str) -> list[str]:
    """ATX headings outside fenced and indented code blocks."""
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith(("    ", "\t")):
            continue
        found = re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)
        if found:
            out.append(found.group(1))
    return out


def anchors() -> set[str]:
    return {github_anchor(h) for h in headings(METHODS.read_text(encoding="utf-8"))}


def citations() -> list[tuple[str, int, str, str | None]]:
    """(file, line, matched text, anchor or None) for every mention in hf_faithful/."""
    out = []
    for path in sorted((ROOT / "hf_faithful").rglob("*")):
        if not path.is_file() or path.suffix not in SCANNED:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in CITATION.finditer(line):
                anchor = match.group(1)
                rel = str(path.relative_to(ROOT))
                out.append((rel, number, match.group(0), anchor[1:] if anchor else None))
    return out


def test_anchor_rule_by_hand():
    assert github_anchor("Policy-gradient structural pruning") == (
        "policy-gradient-structural-pruning"
    )
    assert github_anchor("Estimands: ATE_T and ATE_V") == "estimands-ate_t-and-ate_v"
    assert github_anchor("`do(V)` interventions") == "dov-interventions"
    assert headings("# A\n```\n# not a heading\n```\n    # nor this\n## B ##\n") == ["A", "B"]


def test_headings_are_unique():
    names = [github_anchor(h) for h in headings(METHODS.read_text(encoding="utf-8"))]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_the_package_cites_methods_sections():
    found = citations()
    assert found, "no citation of docs/METHODS.md found in hf_faithful/ (the scan is broken)"
    cited = {anchor for *_, anchor in found}
    assert {"recovery-fine-tuning", "sccm-rewards"} <= cited


@pytest.mark.parametrize("citation", citations(), ids=lambda c: f"{c[0]}:{c[1]}")
def test_citation_points_at_a_heading(citation):
    path, line, text, anchor = citation
    assert text.startswith("docs/"), f"{path}:{line}: cite it as docs/METHODS.md#<section>"
    assert anchor, f"{path}:{line}: {text} names no section (docs/METHODS.md#<section>)"
    assert anchor in anchors(), f"{path}:{line}: no heading with anchor #{anchor} in METHODS.md"


def test_links_inside_methods_resolve():
    text = METHODS.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(#([\w-]+)\)", text)
    assert targets
    missing = sorted(set(targets) - anchors())
    assert not missing, f"links to missing sections: {missing}"
