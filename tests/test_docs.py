"""The README is the front door: short, and every page of docs/ is reachable from it; every
relative link of the README and of docs/ leads to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def links(page: Path) -> list[Path]:
    """The files the page's relative markdown links point at."""
    targets = [t for t in LINK.findall(page.read_text()) if "://" not in t]
    return [(page.parent / target).resolve() for target in targets]


def test_the_readme_is_at_most_250_lines_and_links_every_docs_page():
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 250
    pages = {page.resolve() for page in (ROOT / "docs").rglob("*.md")}
    assert pages and pages <= set(links(readme)), sorted(pages - set(links(readme)))


def test_every_relative_link_leads_to_a_file():
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        missing = [target for target in links(page) if not target.exists()]
        assert not missing, (page, missing)
