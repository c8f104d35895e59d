"""Every relative link of README.md and docs/*.md resolves: the file exists, and an anchor
(``#heading``) names a heading of that file, spelled as GitHub spells heading anchors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose_lines(text: str) -> List[Tuple[int, str]]:
    """(line number, line) of a Markdown text outside fenced code blocks, inline code blanked."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, re.sub(r"`[^`]*`", lambda m: "`" + "x" * (len(m.group()) - 2) + "`", line)))
    return lines


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading text: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces to ``-`` (github/cmark-gfm's toc filter; backticks go, their content stays)."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    """Heading anchors of a Markdown file; a repeated heading gets ``-1``, ``-2``... as on GitHub."""
    seen: Dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = github_anchor(m.group(1))
            n = seen.get(base, 0)
            out.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return out


def relative_links(path: Path) -> List[Tuple[int, str]]:
    """(line number, target) of every link and image of a Markdown file that is not a URL."""
    found = []
    for i, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                found.append((i, target))
    return found


def test_the_docs_exist_and_link_somewhere():
    assert (REPO / "docs").is_dir() and len(DOCS) > 1
    assert sum(len(relative_links(p)) for p in DOCS) > 10


def broken_links(doc: Path) -> List[str]:
    """The relative links of ``doc`` whose file is missing or whose anchor names no heading."""
    broken = []
    for line, target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"line {line}: {target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"line {line}: {target} (no heading #{anchor} in {dest.name})")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    broken = broken_links(doc)
    assert not broken, f"{doc.relative_to(REPO)}:\n" + "\n".join(broken)


def test_anchor_spelling_follows_github():
    assert github_anchor("Backbone comparison: `tools/compare_backbones.py`") == \
        "backbone-comparison-toolscompare_backbonespy"
    assert github_anchor("Freezing and norm: Detectron2's keys") == "freezing-and-norm-detectron2s-keys"
    assert github_anchor("Config keys (`MODEL.RANDWIRE`)") == "config-keys-modelrandwire"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n[ok](#title) [bad](#nope) ![img](pic.png)\n"
                                   "```\n[not a link](missing.md)\n```\n`[code](x.md)`\n")
    links = relative_links(tmp_path / "a.md")
    assert links == [(3, "#title"), (3, "#nope"), (3, "pic.png")]
    assert anchors(tmp_path / "a.md") == {"title"}
    assert broken_links(tmp_path / "a.md") == [
        "line 3: #nope (no heading #nope in a.md)", f"line 3: pic.png (no file {tmp_path / 'pic.png'})"]
